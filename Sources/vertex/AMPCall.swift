import AMP
import ArgumentParser
import Foundation
import NIOCore
import Q2Q

struct AMPCommandGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amp",
        abstract: "Talk AMP (Twisted's Asynchronous Messaging Protocol) to a server.",
        subcommands: [Call.self]
    )
}

struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send one AMP command and print the answer's keys and values.",
        discussion: """
            Arguments are sent as text (key=value). Example, against a Vertex presence \
            server or any Twisted AMP server that has these commands:

              vertex amp call 127.0.0.1:8788 Who-Am-I
              vertex amp call 127.0.0.1:9000 Note text=hello
            """
    )

    @Argument(help: "The server, as HOST:PORT.")
    var server: String

    @Argument(help: "The command name, exactly as on the wire (e.g. Who-Am-I).")
    var command: String

    @Argument(help: "Arguments as key=value; values are sent as UTF-8 text.")
    var arguments: [String] = []

    @Option(help: "Seconds to wait for the answer.")
    var timeout: Int = 10

    func run() async throws {
        guard let address = HostPort(server), address.port > 0 else {
            throw ValidationError("server must be HOST:PORT (or [IPv6]:PORT), got '\(server)'")
        }
        var box = AMPBox()
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
                throw ValidationError("argument '\(argument)' is not key=value")
            }
            box[String(argument[..<equals])] = ByteBuffer(string: String(argument[argument.index(after: equals)...]))
        }
        let connection: AMPConnection
        do {
            connection = try await AMPConnection.connect(host: address.host, port: address.port)
        } catch {
            throw CLIError("cannot connect to \(server): \(error)")
        }
        let request = box
        let answer = try await withThrowingTaskGroup(of: AMPBox?.self) { group in
            group.addTask { try await connection.call(command, arguments: request) }
            group.addTask {
                try await Task.sleep(for: .seconds(timeout))
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        await connection.close()
        guard let answer else {
            throw CLIError("no answer from \(server) within \(timeout) s")
        }
        for field in answer.fields.sorted(by: { $0.key < $1.key }) {
            let bytes = field.value.readableBytesView
            if let text = String(validating: bytes, as: UTF8.self), text.unicodeScalars.allSatisfy({ $0.value >= 0x20 || $0 == "\t" }) {
                print("\(field.key)=\(text)")
            } else {
                print("\(field.key)=0x" + bytes.map { String(format: "%02x", $0) }.joined())
            }
        }
    }
}

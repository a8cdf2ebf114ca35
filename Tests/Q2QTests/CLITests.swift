import Foundation
import Testing
import VertexTestSupport

/// The real `vertex` executable against a real `vertex server` process on loopback.
@Suite("vertex CLI and server processes")
struct CLITests {
    static let vertex = ChildProcess.built("vertex")
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A `vertex server` process; its first line says where it listens and the CA.
    struct ServerProcess {
        let process: ChildProcess
        let port: Int
        let fingerprint: String

        /// `niceness` above 0 runs it at a lower priority (a test that loads its servers
        /// heavily must not take the CPU the tests beside it need for their deadlines).
        static func start(domain: String = "example.test", data: URL, log: URL, extra: [String] = [], niceness: Int = 0) async throws -> ServerProcess {
            let arguments = ["server", "--domain", domain, "--data", data.path, "--port", "0", "--bind", "127.0.0.1"] + extra
            let process = niceness > 0
                ? try ChildProcess(ChildProcess.env, ["nice", "-n", "\(niceness)", vertex.path] + arguments, stderrFile: log)
                : try ChildProcess(vertex, arguments, stderrFile: log)
            guard let line = await process.nextLine(),
                  let range = line.range(of: #"listening on 127\.0\.0\.1:(\d+), CA (SHA256:[0-9A-F:]+)"#, options: .regularExpression) else {
                await process.stop()
                throw CLIFailure("vertex server did not say where it listens; its log: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
            }
            let match = String(line[range])
            let port = Int(match.split(separator: ":")[1].split(separator: ",")[0])!
            let fingerprint = String(match[match.range(of: "SHA256:")!.lowerBound...])
            return ServerProcess(process: process, port: port, fingerprint: fingerprint)
        }
    }

    struct CLIFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func vertex(_ arguments: [String], input: String? = nil) async throws -> ChildProcess.Run {
        try await ChildProcess.run(vertex, arguments, input: input)
    }

    /// A `vertex server` on loopback with `users` registered on example.test, each with a
    /// home (`home-USER`); `body` gets a path helper inside a scratch directory.
    static func withUsers(_ users: [String], _ body: (_ path: (String) -> String) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        try "pw\n".write(toFile: path("password"), atomically: true, encoding: .utf8)
        let server = try await ServerProcess.start(data: directory.appendingPathComponent("data"),
                                                   log: directory.appendingPathComponent("server.log"))
        for user in users {
            #expect(try await vertex(["user", "add", "\(user)@example.test", "--data", path("data"), "--password-file", path("password")]).status == 0)
            _ = try await vertex(["servers", "set", "example.test", "127.0.0.1:\(server.port)", "--home", path("home-\(user)")])
            let registered = try await vertex(["register", "\(user)@example.test", "--password-file", path("password"), "--home", path("home-\(user)")])
            #expect(registered.status == 0, "\(registered.stderr)")
        }
        do {
            try await body(path)
            await server.process.stop()
        } catch {
            await server.process.stop()
            throw error
        }
    }

    @Test("server, user add, register (wrong then right password), identity, whoami, revoke, restart keeps the CA")
    func acceptance() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("d1").path
        let home = directory.appendingPathComponent("home").path
        let good = directory.appendingPathComponent("password")
        let bad = directory.appendingPathComponent("wrong")
        try "open sesame\n".write(to: good, atomically: true, encoding: .utf8)
        try "open barley\n".write(to: bad, atomically: true, encoding: .utf8)

        let server = try await ServerProcess.start(data: URL(fileURLWithPath: data), log: directory.appendingPathComponent("server.log"))
        let address = "127.0.0.1:\(server.port)"

        let add = try await Self.vertex(["user", "add", "alice@example.test", "--data", data, "--password-file", good.path])
        #expect(add.status == 0, "\(add.stderr)")
        let again = try await Self.vertex(["user", "add", "alice@example.test", "--data", data, "--password-file", good.path])
        #expect(again.status != 0 && again.stderr == "Error: alice@example.test exists already\n")

        let wrong = try await Self.vertex(["register", "alice@example.test", "--server", address, "--password-file", bad.path, "--home", home])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.split(separator: "\n").count == 1 && wrong.stderr.hasPrefix("Error: "), "\(wrong.stderr)")
        let none = try await Self.vertex(["identity", "show", "--home", home])
        #expect(none.stdout.hasPrefix("no identities"))

        // The password from standard input, as a script would give it.
        let right = try await Self.vertex(["register", "alice@example.test", "--server", address, "--password-file", "-", "--home", home],
                                          input: "open sesame\n")
        #expect(right.status == 0, "\(right.stderr)")
        #expect(right.stdout.hasPrefix("registered alice@example.test"))
        // The server that worked is remembered for the domain (the first-run trap of issue 18).
        #expect(right.stdout.contains("recorded \(address) as the presence server of example.test"), "\(right.stdout)")
        #expect(try await Self.vertex(["servers", "list", "--home", home]).stdout.contains(address))
        let shown = try await Self.vertex(["identity", "show", "--home", home])
        #expect(shown.stdout.hasPrefix("alice@example.test\n"))
        #expect(shown.stdout.contains("valid until"))
        let pins = try await Self.vertex(["pins", "list", "--home", home])
        #expect(pins.stdout == "example.test\t\(server.fingerprint)\n")

        let whoami = try await Self.vertex(["whoami", "--server", address])
        #expect(whoami.status == 0 && whoami.stdout.hasPrefix("127.0.0.1:"))

        let list = try await Self.vertex(["cert", "list", "--data", data])
        let serial = try #require(list.stdout.split(separator: "\t").first.map(String.init))
        #expect(list.stdout.contains("alice@example.test") && list.stdout.contains("valid"))
        let revoke = try await Self.vertex(["cert", "revoke", serial, "--data", data])
        #expect(revoke.status == 0 && revoke.stdout == "revoked \(serial)\n")
        #expect(try await Self.vertex(["cert", "list", "--data", data]).stdout.contains("revoked"))

        // SIGTERM: a clean stop.
        server.process.signal(SIGTERM)
        #expect(await server.process.exited.value == 0)

        // Nothing answers now: the error names the server, where that choice came from,
        // and the command that changes it; vertex doctor says so with its exit code 4.
        let unreachable = try await Self.vertex(["connect", "alice@example.test", "bob@example.test/echo", "--home", home])
        #expect(unreachable.status != 0)
        #expect(unreachable.stderr.contains("cannot reach the presence server of example.test at \(address) (recorded with vertex servers set; change it with: vertex servers set example.test HOST:PORT)"),
                "\(unreachable.stderr)")
        let doctor = try await Self.vertex(["doctor", "--home", home, "--no-portmap"])
        #expect(doctor.status == 4, "\(doctor.stdout)\(doctor.stderr)")
        #expect(doctor.stdout.contains("cannot reach \(address) (recorded with vertex servers set"), "\(doctor.stdout)")

        // Restart: same users, same CA.
        let restarted = try await ServerProcess.start(data: URL(fileURLWithPath: data), log: directory.appendingPathComponent("server2.log"))
        #expect(restarted.fingerprint == server.fingerprint)
        let afterRestart = try await Self.vertex(["register", "alice@example.test", "--server", "127.0.0.1:\(restarted.port)",
                                                  "--password-file", good.path, "--home", home])
        #expect(afterRestart.status == 0, "\(afterRestart.stderr)")
        await restarted.process.stop()
    }

    @Test("bad command lines get a clear error and a non-zero status", arguments: [
        ["register", "not an address"],
        ["register", "example.test", "--password-file", "/nonexistent"],
        ["whoami", "--server", "localhost"],
        ["server", "--port", "70000", "--domain", "example.test"],
        ["server"],
        ["user", "add", "alice@example.test", "--password-file", "/nonexistent/file"],
        ["cert", "revoke", "xyz"],
    ])
    func badCommandLines(arguments: [String]) async throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-cli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let run = try await Self.vertex(arguments + (arguments[0] == "server" || arguments[0] == "whoami" ? [] :
                                                        arguments[0] == "register" ? ["--home", home.path] : ["--data", home.path]))
        #expect(run.status != 0)
        #expect(run.stderr.hasPrefix("Error: "), "\(run.stderr)")
    }

    @Test("a Twisted AMP client gets the domain's CA from identify and its own address from Who-Am-I")
    func twistedClient() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try await ServerProcess.start(data: directory.appendingPathComponent("data"), log: directory.appendingPathComponent("server.log"))
        let script = Self.packageRoot.appendingPathComponent("scripts/interop/twisted_presence_client.py").path
        let run = try await ChildProcess.run(ChildProcess.env, ["python3", script, "127.0.0.1:\(server.port)", "example.test"])
        await server.process.stop()
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("PASS identify: certificate subject CN=example.test issuer CN=example.test CA=True"))
        #expect(run.stdout.contains("PASS Who-Am-I"))
        #expect(run.stdout.contains("PASS source-ip"))
        #expect(run.stdout.hasSuffix("0 failed\n"))
    }
}

import ArgumentParser
import Foundation
import Q2Q

/// A failure reported as one line ("Error: …") with a non-zero exit status.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Q2QAddress: ExpressibleByArgument {
    public init?(argument: String) {
        guard let address = try? Q2QAddress(argument) else { return nil }
        self = address
    }
}

extension HostPort: ExpressibleByArgument {
    public init?(argument: String) {
        guard let hostPort = HostPort(argument), hostPort.port > 0 else { return nil }
        self = hostPort
    }
}

/// Parses an address with the parser's own one-line reason on failure.
func parseAddress(_ text: String) throws -> Q2QAddress {
    do {
        return try Q2QAddress(text)
    } catch {
        throw ValidationError("'\(text)' is not a Q2Q address: \(error)")
    }
}

/// `--home`: the node's own keys, certificates and pins.
struct HomeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The node's home directory (identities, pinned domains).",
                               discussion: "Default: $VERTEX_HOME, else ~/.vertex.", valueName: "dir"))
    var home: String?

    var directory: URL { SQLiteNodeStore.homeDirectory(home) }

    func openStore() throws -> SQLiteNodeStore {
        do {
            return try SQLiteNodeStore(home: directory)
        } catch {
            throw CLIError("cannot open the home \(directory.path): \(error)")
        }
    }
}

/// `--data`: a presence server's data directory.
struct DataOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The presence server's data directory (CA keys, users, certificates).",
                               discussion: "Default: $VERTEX_DATA, else ~/.vertex/server.", valueName: "dir"))
    var data: String?

    var directory: URL {
        if let data, !data.isEmpty { return URL(fileURLWithPath: data) }
        if let fromEnvironment = ProcessInfo.processInfo.environment["VERTEX_DATA"], !fromEnvironment.isEmpty {
            return URL(fileURLWithPath: fromEnvironment)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".vertex/server")
    }

    func openStore() throws -> SQLitePresenceStore {
        do {
            return try SQLitePresenceStore(directory: directory)
        } catch {
            throw CLIError("cannot open the data directory \(directory.path): \(error)")
        }
    }
}

/// `--password-file`, or a prompt without echo.
struct PasswordOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Read the password from this file's first line ('-' for standard input).",
                               discussion: "Without it, the password is asked on the terminal without echo.",
                               valueName: "file"))
    var passwordFile: String?

    /// The password; `prompt` is shown when asking on the terminal.
    func read(prompt: String, confirm: Bool = false) throws -> [UInt8] {
        let text: String
        if let passwordFile {
            let contents: String
            if passwordFile == "-" {
                contents = readLine(strippingNewline: true) ?? ""
            } else {
                guard let data = FileManager.default.contents(atPath: passwordFile) else {
                    throw CLIError("cannot read the password file \(passwordFile)")
                }
                contents = String(decoding: data, as: UTF8.self)
            }
            text = String(contents.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                .trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
        } else {
            guard isatty(STDIN_FILENO) != 0 else {
                throw CLIError("no terminal to ask the password on; use --password-file FILE (or - for standard input)")
            }
            text = try Self.ask(prompt)
            if confirm, try Self.ask("Again: ") != text {
                throw CLIError("the two passwords differ")
            }
        }
        guard !text.isEmpty else { throw CLIError("the password is empty") }
        return Array(text.utf8)
    }

    private static func ask(_ prompt: String) throws -> String {
        guard let line = getpass(prompt) else { throw CLIError("cannot read the password from the terminal") }
        return String(cString: line)
    }
}

/// Formats a date as UTC, to the second.
func utc(_ date: Date) -> String {
    date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false).timeSeparator(.colon)) + "Z"
}

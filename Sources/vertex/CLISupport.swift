import ArgumentParser
import Foundation
import Logging
import PresencePostgres
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

    @Option(help: ArgumentHelp("Keep users, certificates and CAs in PostgreSQL instead of SQLite, shared by every presence node of the domain (default: $VERTEX_DATABASE_URL, else SQLite in --data).",
                               valueName: "postgres://user:password@host:port/database"))
    var database: String?

    @Option(help: ArgumentHelp("With --database: the key that seals the CAs' private keys in the database; every node of the domain needs the same file (default: ca-sealing.key in --data, created by vertex server when missing).",
                               valueName: "file"))
    var caKeyFile: String?

    /// `--database`, else `$VERTEX_DATABASE_URL`.
    var databaseURL: String? {
        if let database, !database.isEmpty { return database }
        if let fromEnvironment = ProcessInfo.processInfo.environment["VERTEX_DATABASE_URL"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return nil
    }

    var sealingKeyFile: URL { caKeyFile.map { URL(fileURLWithPath: $0) } ?? directory.appendingPathComponent("ca-sealing.key") }

    /// The store: PostgreSQL when a database URL is given, else SQLite in the data
    /// directory. `server` creates the sealing key file when it is missing (the other
    /// commands never touch CA keys and do without one).
    func openStore(server: Bool = false, logger: Logger = Logger(label: "vertex.store")) async throws -> any PresenceStore {
        guard let text = databaseURL else {
            do {
                return try SQLitePresenceStore(directory: directory)
            } catch {
                throw CLIError("cannot open the data directory \(directory.path): \(error)")
            }
        }
        do {
            let url = try DatabaseURL(text)
            var sealing: CAKeySealing?
            if server || FileManager.default.fileExists(atPath: sealingKeyFile.path) {
                let (loaded, created) = try CAKeySealing.load(from: sealingKeyFile, create: server)
                if created {
                    logger.notice("created the CA sealing key \(sealingKeyFile.path): give the same file to every presence node of this database")
                }
                sealing = loaded
            }
            return try await PostgresPresenceStore.open(url, sealing: sealing, logger: logger)
        } catch let error as DatabaseURLError {
            throw CLIError(error.description)
        } catch let error as CAKeySealingError {
            throw CLIError(error.description)
        } catch let error as PostgresStoreError {
            throw CLIError(error.description)
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

import NIOCore
import NIOSSL

/// What a responder hands back to the connection.
enum AMPResponderOutcome: Sendable {
    /// Answer with this box (no reserved keys yet).
    case answer(AMPBox)
    /// Answer with a declared error.
    case declaredError(code: String, description: String, fatal: Bool)
    /// Answer, then switch this side to TLS (Twisted's StartTLS).
    case answerThenStartTLS(AMPBox, AMPTLSUpgrade)
    /// Answer, then hand the connection to another protocol.
    case answerThenSwitch(AMPBox, AMPProtocolSwitch)
}

/// Installs the protocol that takes over a connection after a protocol switch.
/// It runs on the channel's event loop, before any further byte is read, and must
/// add the new protocol's handlers with `channel.pipeline.syncOperations`.
/// Bytes that arrived after the switching box are delivered to those handlers.
public typealias AMPProtocolSwitch = @Sendable (any Channel) throws -> Void

/// Everything a responder may need beyond its arguments.
public struct AMPRequestContext: Sendable {
    /// The connection the request came on; a responder may call the peer back on it.
    public let connection: AMPConnection
    public var remoteAddress: SocketAddress? { connection.remoteAddress }
    public var localAddress: SocketAddress? { connection.localAddress }
}

/// The commands one side of a connection answers, each with its responder.
///
/// ```swift
/// var responders = AMPResponders()
/// responders.register(Sum.self) { arguments, _ in
///     Sum.Response(total: arguments.values.reduce(0, +))
/// }
/// ```
/// A responder that throws its command's declared error answers with that error's
/// code; any other error answers `UNKNOWN` and closes the connection, as Twisted does.
public struct AMPResponders: Sendable {
    typealias Responder = @Sendable (AMPBox, AMPRequestContext) async throws -> AMPResponderOutcome
    typealias ImmediateResponder = @Sendable (AMPBox, AMPRequestContext) throws -> AMPResponderOutcome

    struct Entry: Sendable {
        var respond: Responder
        /// Set for responders that answer without suspending: run in place, no task.
        var respondNow: ImmediateResponder? = nil
        /// Commands after whose answer the byte stream changes (TLS, protocol switch):
        /// reading stops until they have answered.
        var switchesProtocol: Bool
    }

    private(set) var entries: [String: Entry] = [:]

    public init() {}

    /// A command's declared error as the answer it becomes; other errors pass through.
    private static func answer<Command: AMPCommand>(
        _ command: Command.Type, _ body: () async throws -> AMPResponderOutcome
    ) async throws -> AMPResponderOutcome {
        do {
            return try await body()
        } catch let error as Command.Failure {
            return error.outcome
        }
    }

    /// The command names answered.
    public var commandNames: [String] { entries.keys.sorted() }

    func entry(for name: String) -> Entry? { entries[name] }

    /// Answers `command` with `body`.
    public mutating func register<Command: AMPCommand>(
        _ command: Command.Type,
        _ body: @escaping @Sendable (Command.Arguments, AMPRequestContext) async throws -> Command.Response
    ) {
        entries[Command.name] = Entry(respond: { box, context in
            let arguments = try AMPBoxDecoder().decode(Command.Arguments.self, from: box)
            return try await Self.answer(Command.self) {
                .answer(try AMPBoxEncoder().encode(try await body(arguments, context)))
            }
        }, switchesProtocol: false)
    }

    /// Answers `command` with `body` run synchronously on the connection's event loop,
    /// without creating a task: the cheapest way to answer, for responders that compute
    /// their answer at once. `body` must not block.
    public mutating func registerImmediate<Command: AMPCommand>(
        _ command: Command.Type,
        _ body: @escaping @Sendable (Command.Arguments, AMPRequestContext) throws -> Command.Response
    ) {
        let respondNow: ImmediateResponder = { box, context in
            let arguments = try AMPBoxDecoder().decode(Command.Arguments.self, from: box)
            do {
                return .answer(try AMPBoxEncoder().encode(try body(arguments, context)))
            } catch let error as Command.Failure {
                return error.outcome
            }
        }
        entries[Command.name] = Entry(respond: { box, context in try respondNow(box, context) },
                                      respondNow: respondNow, switchesProtocol: false)
    }

    /// Answers a StartTLS-style command: after the answer is written this side starts
    /// TLS with the configuration `body` returns (as the TLS server when this side
    /// accepted the TCP connection, else as the client).
    public mutating func registerStartTLS<Command: AMPCommand>(
        _ command: Command.Type,
        _ body: @escaping @Sendable (Command.Arguments, AMPRequestContext) async throws -> (Command.Response, TLSConfiguration)
    ) {
        registerStartTLS(command) { arguments, context -> (Command.Response, AMPTLSUpgrade) in
            let (response, configuration) = try await body(arguments, context)
            return (response, AMPTLSUpgrade(configuration: configuration))
        }
    }

    /// Answers a StartTLS-style command as above, with every TLS setting, including a
    /// custom verification of the peer's certificates.
    public mutating func registerStartTLS<Command: AMPCommand>(
        _ command: Command.Type,
        _ body: @escaping @Sendable (Command.Arguments, AMPRequestContext) async throws -> (Command.Response, AMPTLSUpgrade)
    ) {
        entries[Command.name] = Entry(respond: { box, context in
            let arguments = try AMPBoxDecoder().decode(Command.Arguments.self, from: box)
            return try await Self.answer(Command.self) {
                let (response, upgrade) = try await body(arguments, context)
                return .answerThenStartTLS(try AMPBoxEncoder().encode(response), upgrade)
            }
        }, switchesProtocol: true)
    }

    /// Answers a protocol-switching command (Twisted's `ProtocolSwitchCommand`): after
    /// the answer, AMP leaves the connection and the returned switch installs the new
    /// protocol.
    public mutating func registerProtocolSwitch<Command: AMPCommand>(
        _ command: Command.Type,
        _ body: @escaping @Sendable (Command.Arguments, AMPRequestContext) async throws -> (Command.Response, AMPProtocolSwitch)
    ) {
        entries[Command.name] = Entry(respond: { box, context in
            let arguments = try AMPBoxDecoder().decode(Command.Arguments.self, from: box)
            return try await Self.answer(Command.self) {
                let (response, install) = try await body(arguments, context)
                return .answerThenSwitch(try AMPBoxEncoder().encode(response), install)
            }
        }, switchesProtocol: true)
    }
}

extension AMPDeclaredError {
    /// The answer this error becomes.
    var outcome: AMPResponderOutcome {
        .declaredError(code: code, description: errorDescription, fatal: isFatal)
    }
}

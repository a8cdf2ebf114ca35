/// The declaration of an AMP command, the Swift counterpart of a Twisted
/// `amp.Command` subclass.
///
/// ```swift
/// enum Sum: AMPCommand {
///     static let name = "Sum"
///     struct Arguments: Codable, Sendable { var values: [Int] }
///     struct Response: Codable, Sendable { var total: Int }
/// }
/// let reply = try await connection.call(Sum.self, Sum.Arguments(values: [1, 2]))
/// ```
///
/// Argument and response keys are the structs' coding keys; give a `CodingKeys` enum
/// with raw values for wire names that are not Swift identifiers (`udp_source`, `From`).
public protocol AMPCommand: Sendable {
    associatedtype Arguments: Codable & Sendable
    associatedtype Response: Codable & Sendable = AMPEmpty
    /// The command's declared errors; ``AMPNoErrors`` when it declares none.
    associatedtype Failure: AMPDeclaredError = AMPNoErrors

    /// The `_command` value on the wire.
    static var name: String { get }
    /// When false, the request is sent without `_ask` and nothing is answered.
    static var requiresAnswer: Bool { get }
}

extension AMPCommand {
    public static var requiresAnswer: Bool { true }
}

/// An argument list or response with no keys.
public struct AMPEmpty: Codable, Sendable, Hashable {
    public init() {}
}

/// A command's declared errors: each has a wire code (`_error_code`), and a description
/// (`_error_description`). Responders throw them; callers receive them back typed.
///
/// ```swift
/// enum SignError: AMPDeclaredError {
///     case noSuchUser(String)
///
///     var code: String { "NoSuchUser" }
///     var errorDescription: String {
///         switch self { case .noSuchUser(let name): return "no user \(name)" }
///     }
///     init?(code: String, description: String) {
///         guard code == "NoSuchUser" else { return nil }
///         self = .noSuchUser(description)
///     }
/// }
/// ```
public protocol AMPDeclaredError: Error, Sendable {
    /// The `_error_code` sent for this error.
    var code: String { get }
    /// The `_error_description` sent for this error.
    var errorDescription: String { get }
    /// A fatal error is answered and then the connection is closed (Twisted's `fatalErrors`).
    var isFatal: Bool { get }
    /// The error for a received code, or nil when the code is not declared.
    init?(code: String, description: String)
}

extension AMPDeclaredError {
    public var isFatal: Bool { false }
}

/// For commands that declare no errors.
public struct AMPNoErrors: AMPDeclaredError {
    public var code: String { "" }
    public var errorDescription: String { "" }
    public init?(code: String, description: String) { return nil }
}

/// An error answer a call did not declare, and errors AMP itself answers:
/// `UNKNOWN` (the responder failed unexpectedly) and `UNHANDLED` (no such command).
public struct AMPRemoteError: Error, Sendable, Hashable, CustomStringConvertible {
    public static let unknownCode = "UNKNOWN"
    public static let unhandledCode = "UNHANDLED"

    public var code: String
    public var errorDescription: String

    public init(code: String, description: String) {
        self.code = code
        self.errorDescription = description
    }

    /// The peer has no responder for the command.
    public var isUnhandledCommand: Bool { code == Self.unhandledCode }

    public var description: String { "remote AMP error \(code): \(errorDescription)" }
}

/// Local failures of a connection.
public enum AMPConnectionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The connection closed before the answer arrived (or before the call was made).
    case connectionClosed(reason: String)
    /// The connection was switched to another protocol, so AMP calls can no longer be made.
    case protocolSwitched
    /// TLS was already started on this connection; it can be started only once.
    case tlsAlreadyStarted
    /// A call cannot be made while a StartTLS or protocol switch is in progress.
    case busySwitching
    /// The answer box did not hold a valid response.
    case badResponse(String)

    public var description: String {
        switch self {
        case .connectionClosed(let reason): return "AMP connection closed: \(reason)"
        case .protocolSwitched: return "the AMP connection was switched to another protocol"
        case .tlsAlreadyStarted: return "TLS can be started only once on a connection"
        case .busySwitching: return "the AMP connection is switching protocols"
        case .badResponse(let why): return "bad AMP response: \(why)"
        }
    }
}

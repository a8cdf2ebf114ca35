import AMP

/// The declared errors of the presence commands. Codes from the original keep their
/// names (`NoSuchUser`, `BadCertificateRequest`, `NotAllowed`, `VerifyError`); the rest
/// are ours, for refusals the original answered with `UNKNOWN` and a dropped connection.
public enum PresenceError: AMPDeclaredError, Hashable, CustomStringConvertible {
    /// `sign`: no such user, or a wrong password (deliberately indistinguishable).
    case noSuchUser(String)
    /// `sign`: the request is malformed or asks for a name it may not have.
    case badCertificateRequest(String)
    /// `add_user`: the name is taken, or open registration is off.
    case notAllowed(String)
    /// The caller's certificate does not vouch for the address it claims.
    case verifyError(String)
    /// ours — `identify`/`secure` for a domain this server does not serve.
    case unknownDomain(String)
    /// ours — `sign`/`add_user` sent before `secure`: a password never travels in clear.
    case secureRequired(String)
    /// ours — too many attempts from one source; try later.
    case rateLimited(String)
    /// ours — the server cannot do it now (its database is unreachable); try later.
    case unavailable(String)

    public var code: String {
        switch self {
        case .noSuchUser: return "NoSuchUser"
        case .badCertificateRequest: return "BadCertificateRequest"
        case .notAllowed: return "NotAllowed"
        case .verifyError: return "VerifyError"
        case .unknownDomain: return "UnknownDomain"
        case .secureRequired: return "SecureRequired"
        case .rateLimited: return "RateLimited"
        case .unavailable: return "Unavailable"
        }
    }

    public var errorDescription: String {
        switch self {
        case .noSuchUser(let text), .badCertificateRequest(let text), .notAllowed(let text), .verifyError(let text),
             .unknownDomain(let text), .secureRequired(let text), .rateLimited(let text), .unavailable(let text):
            return text
        }
    }

    public init?(code: String, description: String) {
        switch code {
        case "NoSuchUser": self = .noSuchUser(description)
        case "BadCertificateRequest": self = .badCertificateRequest(description)
        case "NotAllowed": self = .notAllowed(description)
        case "VerifyError": self = .verifyError(description)
        case "UnknownDomain": self = .unknownDomain(description)
        case "SecureRequired": self = .secureRequired(description)
        case "RateLimited": self = .rateLimited(description)
        case "Unavailable": self = .unavailable(description)
        default: return nil
        }
    }

    public var description: String { "\(code): \(errorDescription)" }
}

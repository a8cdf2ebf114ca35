import AMP
import NIOCore

/// A way to reach a listener (the `Method` type): `tcp@host:port`, `ptcp@host:port`,
/// `rptcp@host:port`, `virtual`, or a method this version does not know (kept, so that
/// newer peers' lists pass through, and never attempted).
public enum Q2QMethod: Hashable, Sendable, CustomStringConvertible {
    case tcp(HostPort)
    case ptcp(HostPort)
    case rptcp(HostPort)
    case virtual
    case unknown(String)

    /// Parses the text form, split at the first `@`.
    public init(_ text: String) {
        let name: Substring
        let data: Substring?
        if let at = text.firstIndex(of: "@") {
            name = text[..<at]
            data = text[text.index(after: at)...]
        } else {
            name = Substring(text)
            data = nil
        }
        switch (name, data.flatMap { HostPort(String($0)) }) {
        case ("tcp", let address?) where address.port > 0: self = .tcp(address)
        case ("ptcp", let address?) where address.port > 0: self = .ptcp(address)
        case ("rptcp", let address?) where address.port > 0: self = .rptcp(address)
        case ("virtual", _) where data == nil: self = .virtual
        default: self = .unknown(text)
        }
    }

    public var description: String {
        switch self {
        case .tcp(let address): return "tcp@\(address)"
        case .ptcp(let address): return "ptcp@\(address)"
        case .rptcp(let address): return "rptcp@\(address)"
        case .virtual: return "virtual"
        case .unknown(let text): return text
        }
    }

    /// The address of a `tcp@` method; nil for the others.
    public var tcpAddress: HostPort? {
        if case .tcp(let address) = self { address } else { nil }
    }

    /// The address of a `tcp@`, `ptcp@` or `rptcp@` method; nil for the others.
    public var address: HostPort? {
        switch self {
        case .tcp(let address), .ptcp(let address), .rptcp(let address): address
        case .virtual, .unknown: nil
        }
    }

    /// The method's name: `tcp`, `ptcp`, `rptcp`, `virtual`, or the unknown text's.
    public var name: String {
        switch self {
        case .tcp: return "tcp"
        case .ptcp: return "ptcp"
        case .rptcp: return "rptcp"
        case .virtual: return "virtual"
        case .unknown(let text): return String(text.prefix { $0 != "@" })
        }
    }
}

extension Q2QMethod: AMPArgumentCodable, Codable {
    /// On the wire a method is its text, as AMP `String` bytes.
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(description)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Q2QMethod {
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
            throw AMPArgumentError(type: "Method", message: "not UTF-8")
        }
        return Q2QMethod(text)
    }

    public init(from decoder: any Decoder) throws {
        self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

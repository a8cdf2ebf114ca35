import AMP
import NIOCore

/// A Q2Q address: `resource@domain` for a user (`alice@example.com`), or a bare `domain`
/// for the domain itself (its presence server). The anonymous address has neither part.
///
/// Domains are compared without case (DNS is case-insensitive), resources with case.
/// Parsing refuses empty parts, whitespace, control characters, `/`, a second `@` and
/// parts over 255 bytes.
public struct Q2QAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The user part; empty for a domain address.
    public let resource: String
    /// The domain, lowercased; empty only for the anonymous address.
    public let domain: String

    /// The anonymous address (the empty string on the wire).
    public static let anonymous = Q2QAddress(uncheckedResource: "", domain: "")

    public static let maximumPartLength = 255

    private init(uncheckedResource resource: String, domain: String) {
        self.resource = resource
        self.domain = domain
    }

    /// A user address, or a domain address when `resource` is nil.
    public init(resource: String?, domain: String) throws(Q2QAddressError) {
        let domain = domain.lowercased()
        try Self.validate(domain, part: "domain")
        if let resource {
            try Self.validate(resource, part: "user")
        }
        self.init(uncheckedResource: resource ?? "", domain: domain)
    }

    /// Parses `user@domain` or `domain`.
    public init(_ text: String) throws(Q2QAddressError) {
        if text.isEmpty { throw .empty }
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        switch parts.count {
        case 1:
            try self.init(resource: nil, domain: String(parts[0]))
        case 2:
            if parts[0].isEmpty { throw .emptyPart(text, part: "user") }
            try self.init(resource: String(parts[0]), domain: String(parts[1]))
        default:
            throw .tooManyAtSigns(text)
        }
    }

    private static func validate(_ value: String, part: String) throws(Q2QAddressError) {
        if value.isEmpty { throw .emptyPart(value, part: part) }
        if value.utf8.count > maximumPartLength { throw .tooLong(part: part, length: value.utf8.count) }
        if let bad = value.unicodeScalars.first(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F || $0 == "/" || $0 == "@" }) {
            throw .invalidCharacter(bad, part: part)
        }
    }

    public var isAnonymous: Bool { domain.isEmpty }
    /// A domain address (a presence server), not a user.
    public var isDomain: Bool { resource.isEmpty && !domain.isEmpty }
    /// The address of this address's domain.
    public var domainAddress: Q2QAddress { Q2QAddress(uncheckedResource: "", domain: domain) }

    public var description: String { resource.isEmpty ? domain : "\(resource)@\(domain)" }

    /// Ordered by (domain, resource), as the original orders them.
    public static func < (lhs: Q2QAddress, rhs: Q2QAddress) -> Bool {
        (lhs.domain, lhs.resource) < (rhs.domain, rhs.resource)
    }
}

/// Why a text is not a Q2Q address.
public enum Q2QAddressError: Error, Sendable, Hashable, CustomStringConvertible {
    case empty
    case emptyPart(String, part: String)
    case tooManyAtSigns(String)
    case tooLong(part: String, length: Int)
    case invalidCharacter(Unicode.Scalar, part: String)

    public var description: String {
        switch self {
        case .empty:
            return "a Q2Q address cannot be empty"
        case .emptyPart(let text, let part):
            return "'\(text)' has an empty \(part) part (expected user@domain or domain)"
        case .tooManyAtSigns(let text):
            return "'\(text)' has more than one '@'"
        case .tooLong(let part, let length):
            return "the \(part) part is \(length) bytes long; at most \(Q2QAddress.maximumPartLength) are allowed"
        case .invalidCharacter(let scalar, let part):
            let shown = scalar.value < 0x20 || scalar.value == 0x7F || scalar.properties.isWhitespace
                ? "U+" + String(scalar.value, radix: 16, uppercase: true) : "'\(scalar)'"
            return "the \(part) part contains \(shown), which Q2Q addresses do not allow"
        }
    }
}

extension Q2QAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = text.isEmpty ? .anonymous : try Q2QAddress(text)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension Q2QAddress: AMPArgumentCodable {
    /// The address text; the anonymous address is the empty string.
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(description)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Q2QAddress {
        let text = try String.decodeAMPArgument(from: buffer)
        if text.isEmpty { return .anonymous }
        do {
            return try Q2QAddress(text)
        } catch {
            throw AMPArgumentError(type: "Q2QAddress", message: error.description)
        }
    }
}

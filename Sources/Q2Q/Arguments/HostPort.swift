import AMP
import Foundation
import NIOCore

/// Vertex's `HostPort` argument: `host:port`, and (ours) `[v6addr]:port` for IPv6.
public struct HostPort: Hashable, Sendable, Codable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6addr]:port`.
    public init?(_ text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            // Brackets hold an IPv6 address only.
            guard host.contains(":") else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }  // a bare IPv6 address must be bracketed
        }
        guard !host.isEmpty, !host.unicodeScalars.contains(where: Self.isForbiddenInHost), !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
              let port = Int(portText), (0...65535).contains(port) else { return nil }
        self.init(host: String(host), port: port)
    }

    /// Brackets, spaces and control characters: in no host name or address. (A host
    /// holding a bracket printed as text that did not parse back: `[[p]:1` was read as
    /// host `[p`, written `[p:1`. Found by fuzzing, q2q-arguments.)
    static func isForbiddenInHost(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "[" || scalar == "]" || scalar.properties.isWhitespace || scalar.properties.generalCategory == .control
    }

    /// The host and port of a socket address, when it has both.
    public init?(_ address: SocketAddress) {
        guard let ip = address.ipAddress, let port = address.port else { return nil }
        self.init(host: ip, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether the host is an IPv4 or IPv6 address rather than a name.
    public var hostIsIPAddress: Bool { HostPort.isIPAddress(host) }

    /// Whether `text` is an IPv4 or IPv6 address (bracketed or not) rather than a name.
    public static func isIPAddress(_ text: String) -> Bool {
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, bare, &v4) == 1 || inet_pton(AF_INET6, bare, &v6) == 1
    }
}

extension HostPort: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(description)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> HostPort {
        guard let text = try? String.decodeAMPArgument(from: buffer), let value = HostPort(text) else {
            throw AMPArgumentError(type: "HostPort", message: "expected host:port or [v6addr]:port, got '\(String(buffer: buffer).prefix(64))'")
        }
        return value
    }
}

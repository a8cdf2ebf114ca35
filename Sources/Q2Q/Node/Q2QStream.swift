import Foundation
import NIOCore

/// A mutually authenticated, end-to-end encrypted byte stream between two Q2Q
/// addresses, whatever path it took. TLS 1.3 is already established and the peer's
/// certificate verified against its domain's CA; reading and writing it moves
/// plaintext.
public struct Q2QStream: Sendable {
    /// The stream, as NIO's async channel (`executeThenClose` to use it).
    public let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    /// Our address on this stream.
    public let local: Q2QAddress
    /// The peer's address, as its verified certificate names it.
    public let peer: Q2QAddress
    public let service: String
    /// The method that carried it, e.g. `tcp@192.0.2.7:41000`.
    public let method: Q2QMethod

    /// Finishing the outbound writer half-closes the stream (TLS close_notify): the peer
    /// sees the end of input and can still answer.
    static let channelConfiguration = NIOAsyncChannel<ByteBuffer, ByteBuffer>.Configuration(isOutboundHalfClosureEnabled: true)
}

/// Which methods `connect` may use.
public struct Q2QMethodPolicy: Sendable, Hashable {
    /// Method names allowed, in no particular order; `nil` allows every known one.
    public var allowed: Set<String>?

    /// Every method the listener offers, most direct first.
    public static let auto = Q2QMethodPolicy(allowed: nil)
    public static let tcp = Q2QMethodPolicy(allowed: ["tcp"])
    /// Through the presence server only.
    public static let relay = Q2QMethodPolicy(allowed: ["virtual"])

    public init(allowed: Set<String>?) {
        self.allowed = allowed
    }

    /// Parses `auto` or a comma-separated list of method names (`tcp`, `ptcp`, `rptcp`, `relay`).
    public init?(_ text: String) {
        if text == "auto" {
            self = .auto
            return
        }
        let names = Set(text.split(separator: ",").map { name -> String in
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            return trimmed == "relay" ? "virtual" : trimmed
        })
        guard !names.isEmpty, names.isSubset(of: Self.supported) else { return nil }
        self.init(allowed: names)
    }

    /// The methods this build can attempt.
    public static let supported: Set<String> = ["tcp", "ptcp", "rptcp", "virtual"]

    func allows(_ method: Q2QMethod) -> Bool { allows(name: method.name) }

    func allows(name: String) -> Bool {
        guard Self.supported.contains(name) else { return false }
        return allowed?.contains(name) ?? true
    }
}

extension Q2QMethodPolicy: CustomStringConvertible {
    /// As it is written on a command line: `auto`, or the names (`relay` for `virtual`).
    public var description: String {
        guard let allowed else { return "auto" }
        return allowed.map { $0 == "virtual" ? "relay" : $0 }.sorted().joined(separator: ",")
    }
}

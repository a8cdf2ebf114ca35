import AMP
import Foundation

/// `Server-Time` (ours): the server's clock, for `vertex doctor`'s clock check
/// (certificates are checked against both clocks). Answered in clear.
public enum ServerTime: AMPCommand {
    public static let name = "Server-Time"
    public typealias Arguments = AMPEmpty
    public struct Response: Codable, Sendable {
        /// Milliseconds since 1970 (UTC).
        public var milliseconds: Int
        public init(milliseconds: Int) { self.milliseconds = milliseconds }
    }
}

/// `Check-Reachable` (ours): the server tries, briefly, to open a TCP connection to the
/// caller's own address (the one this connection comes from) at `port`, and says
/// whether it could — whether a public peer could reach a `tcp@` path there. Only on a
/// connection secured as an address, rate-limited per address and per source, and
/// never towards any other host: nobody can aim the server at a third party.
public enum CheckReachable: AMPCommand {
    public static let name = "Check-Reachable"
    public struct Arguments: Codable, Sendable {
        public var port: Int
        public init(port: Int) { self.port = port }
    }
    public struct Response: Codable, Sendable {
        public var reachable: Bool
        /// Why not, in words.
        public var reason: String?
        public init(reachable: Bool, reason: String?) {
            self.reachable = reachable
            self.reason = reason
        }
    }
}

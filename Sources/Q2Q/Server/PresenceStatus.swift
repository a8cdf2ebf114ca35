import Foundation
import Locking

/// A presence node as its status page shows it.
public struct PresenceStatus: Sendable, Codable {
    /// This node's name among the domain's presence nodes.
    public var node: String
    public var domains: [String]
    /// The addresses it listens on.
    public var addresses: [String]
    /// Open connections, and those authenticated as an address.
    public var sessions: Int
    public var authenticatedSessions: Int
    /// Listen registrations (address, service, node).
    public var listeners: Int
    public var relayChannels: Int
    /// Bytes the relay forwarded since the start.
    public var relayedBytes: Int
    /// The domain's other presence nodes that are up (sharing its database).
    public var peers: [PresencePeer]
    public var problems: [RecentProblems.Problem]
}

/// Another presence node of the same domains, as their shared database knows it.
public struct PresencePeer: Sendable, Codable, Hashable {
    public var name: String
    /// Where its peers reach it.
    public var address: String
    /// Seconds since its last heartbeat, by the database's clock.
    public var lastSeen: Double

    public init(name: String, address: String, lastSeen: Double) {
        self.name = name
        self.address = address
        self.lastSeen = lastSeen
    }
}

/// The newest problems worth an operator's look (refusals, relay trouble), for the
/// status page; the log has them all.
public final class RecentProblems: Sendable {
    public struct Problem: Sendable, Codable {
        public var time: Date
        public var text: String
    }

    static let kept = 20
    private let problems = Locked<[Problem]>([])

    func add(_ text: String) {
        problems.withLock { problems in
            problems.append(Problem(time: Date(), text: text))
            if problems.count > Self.kept { problems.removeFirst(problems.count - Self.kept) }
        }
    }

    /// Newest first.
    public func list() -> [Problem] { problems.withLock { $0.reversed() } }
}

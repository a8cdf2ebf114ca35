import AMP
import NIOCore

// Virtual channels multiplexed on one AMP connection (spec q2q.md (d)), with the
// original's wire names. Ids: the side that made the TCP connection numbers its
// channels 1, 2, 3…; the side that accepted it -1, -2, -3…, so the two never collide.

/// `virtual`: open channel `id`. Ours: the optional `listener` asks a presence server to
/// relay the channel to the node that offered that listener id (end-to-end TLS runs
/// inside; the server forwards ciphertext).
public enum Virtual: AMPCommand {
    public static let name = "virtual"
    public struct Arguments: Codable, Sendable {
        public var id: Int
        public var listener: AMPBytes?

        public init(id: Int, listener: String? = nil) {
            self.id = id
            self.listener = listener.map { AMPBytes(Array($0.utf8)) }
        }

        public var listenerID: String? { listener.map { String(buffer: $0.buffer) } }
    }
    public typealias Failure = ConnectionError
}

/// `write`: bytes on channel `id` (no answer; at most 65,535 bytes per box).
public enum Write: AMPCommand {
    public static let name = "write"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var id: Int
        public var body: AMPBytes
        public init(id: Int, body: AMPBytes) {
            self.id = id
            self.body = body
        }
    }
}

/// `close`: channel `id` is finished.
public enum Close: AMPCommand {
    public static let name = "close"
    public struct Arguments: Codable, Sendable {
        public var id: Int
        public init(id: Int) { self.id = id }
    }
}

/// `Choke`: "stop sending on channel `id`" (no answer).
public enum Choke: AMPCommand {
    public static let name = "Choke"
    public static var requiresAnswer: Bool { false }
    public typealias Arguments = Close.Arguments
}

/// `Unchoke`: "you may send on channel `id` again" (no answer).
public enum Unchoke: AMPCommand {
    public static let name = "Unchoke"
    public static var requiresAnswer: Bool { false }
    public typealias Arguments = Close.Arguments
}

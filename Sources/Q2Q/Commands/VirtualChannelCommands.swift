import AMP
import NIOCore

// Virtual channels multiplexed on one AMP connection (spec q2q.md (d)), with the
// original's wire names. Ids: the side that made the TCP connection numbers its
// channels 1, 2, 3…; the side that accepted it -1, -2, -3…, so the two never collide.

/// `virtual`: open channel `id`. Ours: the optional `listener` asks a presence server to
/// relay the channel to the node that offered that listener id (end-to-end TLS runs
/// inside; the server forwards ciphertext). The optional `window` in the arguments is
/// the opener's receive window, in the answer the accepter's (see ``ChannelWindow``);
/// relayed channels require both.
public enum Virtual: AMPCommand {
    public static let name = "virtual"
    public struct Arguments: Codable, Sendable {
        public var id: Int
        public var listener: AMPBytes?
        public var window: Int?

        public init(id: Int, listener: String? = nil, window: Int? = nil) {
            self.id = id
            self.listener = listener.map { AMPBytes(Array($0.utf8)) }
            self.window = window
        }

        public var listenerID: String? { listener.map { String(buffer: $0.buffer) } }
    }
    public struct Response: Codable, Sendable {
        public var window: Int?
        public init(window: Int? = nil) { self.window = window }
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

/// `credit` (ours): the receiver of channel `id` consumed `bytes` more; its sender may
/// send that many more (no answer). See ``ChannelWindow``.
public enum Credit: AMPCommand {
    public static let name = "credit"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var id: Int
        public var bytes: Int
        public init(id: Int, bytes: Int) {
            self.id = id
            self.bytes = bytes
        }
    }
}

/// `Choke` (the original's; ours obey it but use ``Credit``): "stop sending on channel `id`" (no answer).
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

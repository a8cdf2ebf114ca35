// Credit-based flow control for virtual channels (ours; the original had only the
// receiving application's Choke/Unchoke, so every hop buffered whatever was in flight
// — spec weaknesses 14 and 25). Each direction of a channel has a window: when the
// channel opens, the receiver grants the sender `window` bytes, and it grants more
// (`credit`) as its application consumes them. A sender never has more than the
// window outstanding, so neither the relay nor the receiving node holds more than
// one window per direction of a channel, however slow the reader, and a slow channel
// never stalls the other channels on the same connection.
//
// Sans-I/O: these value types only count; the channel and the relay do the sending.

/// A peer broke the window rules: it sent beyond its credit, or granted nonsense.
public struct ChannelWindowError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum ChannelWindow {
    /// The window a node grants for each relayed channel it receives on: large enough
    /// for a fast path with tens of milliseconds of round trip, small enough that a
    /// thousand idle-reader channels do not exhaust a server.
    public static let defaultSize = 4 * 1024 * 1024
    /// The largest credit a sender may hold; a grant beyond it is a protocol error.
    public static let maximumCredit = 1 << 30

    /// Whether `size` is acceptable as an initial window.
    static func isValid(_ size: Int) -> Bool { size > 0 && size <= maximumCredit }
}

/// The sending side's credit: how many bytes may go out before the receiver grants more.
struct SendCredit: Hashable, Sendable {
    private(set) var available: Int

    init(initial: Int) {
        self.available = initial
    }

    /// Takes up to `wanted` bytes of credit; returns how many may be sent now.
    mutating func take(upTo wanted: Int) -> Int {
        let granted = min(wanted, available)
        available -= granted
        return granted
    }

    /// Accounts for `count` bytes the sender sent (the relay's check): all of them
    /// must have been covered by credit.
    mutating func spend(_ count: Int) throws(ChannelWindowError) {
        guard count <= available else {
            throw ChannelWindowError("sent \(count) bytes with a credit of \(available)")
        }
        available -= count
    }

    /// The receiver granted `bytes` more.
    mutating func grant(_ bytes: Int) throws(ChannelWindowError) {
        guard bytes > 0, bytes <= ChannelWindow.maximumCredit - available else {
            throw ChannelWindowError("a grant of \(bytes) bytes on a credit of \(available)")
        }
        available += bytes
    }
}

/// The receiving side's window: checks that the sender stays within it, and decides
/// when consumed bytes are worth a grant (batched, so that grants cost a small
/// fraction of the traffic).
struct ReceiveWindow: Hashable, Sendable {
    let size: Int
    /// What the sender may still send under the grants made so far.
    private(set) var outstanding: Int
    private(set) var consumedSinceGrant = 0

    init(size: Int) {
        self.size = size
        self.outstanding = size
    }

    /// `count` bytes arrived.
    mutating func received(_ count: Int) throws(ChannelWindowError) {
        guard count <= outstanding else {
            throw ChannelWindowError("the peer sent \(count) bytes with \(outstanding) left in its window")
        }
        outstanding -= count
    }

    /// The application consumed `count` bytes; returns a grant to send, if one is due
    /// (a quarter of the window consumed since the last).
    mutating func consumed(_ count: Int) -> Int? {
        consumedSinceGrant += count
        guard consumedSinceGrant >= max(1, size / 4) else { return nil }
        let grant = consumedSinceGrant
        consumedSinceGrant = 0
        outstanding += grant
        return grant
    }
}

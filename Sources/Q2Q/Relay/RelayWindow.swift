/// One direction of a relayed channel as the presence server's relay keeps it: the
/// window the receiver granted, the sender's credit under it, and what the relay has
/// forwarded that the receiver has not credited back yet. Sans-I/O: the relay asks it
/// and does the sending.
///
/// Two rules bound what the relay holds for the direction (security review H3):
/// - a credit may only give back bytes the relay forwarded, so the sender's credit plus
///   what is in transit never exceeds the window, whatever the receiver claims;
/// - credit given while the receiver's connection is not writable (its outgoing buffer
///   at the server is full: the receiver is not reading) is withheld until it drains,
///   so a receiver that credits bytes still sitting in the server's buffer gains its
///   sender nothing.
/// The relay therefore holds at most one window per direction beyond the connection's
/// write buffer.
struct RelayWindow: Hashable, Sendable {
    /// The window the relay passes on to the sender (and reserves from its budget).
    private(set) var size: Int
    /// What the sender may still send.
    private(set) var available: Int
    /// Forwarded to the receiver, not credited back yet.
    private(set) var unacknowledged = 0
    /// Credited back while the receiver's connection was full; the sender gets it once
    /// that connection drains.
    private(set) var withheld = 0

    /// A direction whose sender may send `size` bytes at once.
    init(size: Int) {
        self.size = size
        self.available = size
    }

    /// A direction whose receiver has not answered yet: `reserving` is counted against
    /// the budget, and nothing may be sent until ``open(size:)``.
    init(reserving: Int) {
        self.size = reserving
        self.available = 0
    }

    /// The receiver answered with `size` (no larger than what was reserved).
    mutating func open(size: Int) {
        precondition(unacknowledged == 0 && available == 0 && size <= self.size)
        self.size = size
        self.available = size
    }

    /// The sender sent `count` bytes, which the relay forwards.
    mutating func forward(_ count: Int) throws(ChannelWindowError) {
        guard count <= available else {
            throw ChannelWindowError("sent \(count) bytes with a credit of \(available)")
        }
        available -= count
        unacknowledged += count
    }

    /// The receiver credited `count` bytes back. Returns what the sender gets now: all
    /// of it while the receiver's connection is writable, else nothing (withheld).
    mutating func credit(_ count: Int, receiverWritable: Bool) throws(ChannelWindowError) -> Int {
        guard count > 0, count <= unacknowledged else {
            throw ChannelWindowError("a credit of \(count) bytes when \(unacknowledged) were forwarded and not credited")
        }
        unacknowledged -= count
        guard receiverWritable else {
            withheld += count
            return 0
        }
        available += count
        return count
    }

    /// The receiver's connection drained: what was withheld goes to the sender.
    mutating func release() -> Int {
        let released = withheld
        withheld = 0
        available += released
        return released
    }
}

import PTCP

/// One direction of a simulated path: a bottleneck of `bytesPerSecond` with a FIFO
/// queue of `queueBytes`, then `delay`; random loss, duplication and reordering as
/// netem applies them. Randomness comes from the seeded generator passed in.
public struct SimulatedLink: Sendable {
    public var delay: Duration
    public var bytesPerSecond: Double
    public var queueBytes: Int
    public var loss: Double
    public var duplicate: Double
    /// Fraction of packets sent at once, ahead of those being delayed.
    public var reorder: Double
    public var jitter: Duration
    /// Datagrams longer than this are dropped (a path MTU, less IP and UDP headers).
    public var largestDatagram: Int
    /// From this simulated time on, `largestDatagram` becomes the given size (a route
    /// change to a smaller MTU, with no ICMP to say so).
    public var largestDatagramChange: (at: Duration, to: Int)?

    public init(delay: Duration = .milliseconds(10), megabitsPerSecond: Double = 100, queueBytes: Int? = nil,
                loss: Double = 0, duplicate: Double = 0, reorder: Double = 0, jitter: Duration = .zero,
                largestDatagram: Int = 1472) {
        self.delay = delay
        self.bytesPerSecond = megabitsPerSecond * 1e6 / 8
        // Default: two bandwidth-delay products of queue, like netlab's.
        self.queueBytes = queueBytes ?? max(64 * 1024, Int(2 * bytesPerSecond * delay.seconds))
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.jitter = jitter
        self.largestDatagram = largestDatagram
    }

    var freeAt = PTCPInstant.zero

    /// When each copy of a datagram sent at `now` arrives (none when it is lost).
    mutating func arrivals(of size: Int, now: PTCPInstant, random: inout some RandomNumberGenerator) -> [PTCPInstant] {
        if let change = largestDatagramChange, now >= PTCPInstant.zero + change.at {
            largestDatagram = change.to
        }
        guard size <= largestDatagram else { return [] }
        let start = max(now, freeAt)
        let queued = (start - now).seconds * bytesPerSecond
        guard queued + Double(size) <= Double(queueBytes) else { return [] }   // tail drop
        freeAt = start + .nanoseconds(Int64(Double(size) / bytesPerSecond * 1e9))
        if Double.random(in: 0..<1, using: &random) < loss { return [] }
        var when = freeAt + delay
        if jitter > .zero {
            when = when + .nanoseconds(Int64.random(in: 0...jitter.nanoseconds, using: &random))
        }
        if Double.random(in: 0..<1, using: &random) < reorder { when = freeAt }
        var result = [when]
        if Double.random(in: 0..<1, using: &random) < duplicate { result.append(when + .microseconds(100)) }
        return result
    }
}

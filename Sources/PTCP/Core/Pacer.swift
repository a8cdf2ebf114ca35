/// Spaces a connection's packets at its congestion controller's rate, in bursts of a
/// send quantum — about a millisecond of data, at least two datagrams and at most
/// 64 KB — as Linux paces TCP with TSO autosizing.
///
/// Pacing datagram by datagram would wake the sender for every one of them (12 µs
/// apart at 1 Gbit/s): on a busy host those wakeups cost more than the sending, and a
/// sender that misses them leaves the bottleneck idle. A burst of a quantum per wakeup
/// keeps the average rate exact and a millisecond's worth of burst is what every
/// bottleneck queue absorbs.
struct Pacer: Sendable {
    static let burstTime: Duration = .milliseconds(1)
    static let maximumBurst = 64 * 1024
    /// How far a late sender may catch up at once (a timer that fired late, a
    /// descheduled thread): the schedule forgets lateness beyond this. A sender that
    /// waited for its window gets the same credit, which keeps up to about a
    /// millisecond queued at the bottleneck: on a busy host that queue is what keeps
    /// the link busy while sender or receiver is off the CPU (without it, netlab's
    /// 1 Gbit/s link lost 1-3 % of its goodput).
    static let lateness: Duration = .milliseconds(1)

    /// When the next burst may start (the schedule of the bytes sent so far).
    private(set) var nextBurstAt: PTCPInstant
    /// Bytes the current burst may still send.
    private var burstCredit = 0

    init(now: PTCPInstant) {
        nextBurstAt = now
    }

    /// Whether the next packet may go now.
    func allows(now: PTCPInstant) -> Bool {
        burstCredit > 0 || now >= nextBurstAt
    }

    /// When sending may go on, if pacing is what holds it back.
    var deadline: PTCPInstant? {
        burstCredit > 0 ? nil : nextBurstAt
    }

    /// The send quantum at `rate` bytes per second: a millisecond's worth, at least two
    /// datagrams, at most 64 KB.
    static func burstSize(rate: Double, datagramSize: Int) -> Int {
        min(max(Int(rate * burstTime.seconds), 2 * datagramSize), maximumBurst)
    }

    /// Books a packet of `bytes` sent at `rate` bytes per second.
    mutating func sent(bytes: Int, rate: Double, datagramSize: Int, now: PTCPInstant) {
        guard rate > 0 else { return }
        if burstCredit <= 0 || now >= nextBurstAt {
            burstCredit = Self.burstSize(rate: rate, datagramSize: datagramSize)
            nextBurstAt = max(nextBurstAt, now - Self.lateness)
        }
        burstCredit -= bytes
        nextBurstAt = nextBurstAt + .nanoseconds(Int64(Double(bytes) / rate * 1e9))
    }
}

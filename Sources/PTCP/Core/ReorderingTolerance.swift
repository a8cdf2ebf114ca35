/// How much reordering a connection tolerates before it calls a packet lost, learned
/// from losses that turned out not to be (RACK, RFC 8985 §6.2).
///
/// RFC 9002 declares a packet lost once three later packets were acknowledged or it
/// is 9/8 of an RTT older than the newest acknowledged one. A path that reorders by
/// more (netem's or netlab's `--reorder`, which sends a packet ahead of everything
/// the link is delaying; load balancers over unequal paths) then resends a window's
/// worth for every packet that overtook the others: on a 200 ms path sending 1 % of
/// packets 100 ms early that was 20–30 % of the traffic, and a twentieth of the
/// link's goodput. So each packet declared lost is remembered for a while; when one
/// of them is acknowledged after all, the loss was spurious: from then on only time
/// declares losses (no packet count), and the time allowed grows by a quarter of the
/// minimum RTT per round trip that saw a spurious loss, up to one smoothed RTT.
struct ReorderingTolerance: Sendable {
    /// RFC 9002's packet threshold, until the path shows reordering.
    static let packetThreshold: UInt64 = 3
    /// Rounds without a spurious loss after which the window is back to one step.
    static let decayRounds = 16
    /// At most this many lost packets are remembered.
    static let memory = 4096

    struct Declared: Sendable {
        var number: UInt64
        var declaredAt: PTCPInstant
        var size: Int
        var stream: Range<UInt64>?
        var fin: Bool
    }

    /// Packets declared lost, by ascending number.
    private var declared: [Declared] = []
    /// A loss turned out spurious: packets are no longer counted, only time.
    private(set) var reorderingSeen = false
    private var steps = 0
    private var lastWidenedAt: PTCPInstant?

    /// Whether a packet `distance` numbers below the largest acknowledged is lost by
    /// count alone.
    func isLostByCount(distance: UInt64) -> Bool {
        !reorderingSeen && distance >= Self.packetThreshold
    }

    /// How long after it was sent a packet below the largest acknowledged counts as lost.
    func lossDelay(_ rtt: RTTEstimator) -> Duration {
        let base = max(rtt.smoothed ?? rtt.latest, rtt.latest)
        guard reorderingSeen else { return max(base * 9 / 8, RTTEstimator.granularity) }
        let window = min(rtt.minimum / 4 * steps, rtt.smoothed ?? rtt.latest)
        return max(base + window, RTTEstimator.granularity)
    }

    mutating func declaredLost(_ packet: Declared, rtt: RTTEstimator) {
        forgetExpired(now: packet.declaredAt, rtt: rtt)
        if declared.count >= Self.memory { declared.removeFirst(declared.count / 2) }
        var index = declared.count
        while index > 0, declared[index - 1].number > packet.number { index -= 1 }
        declared.insert(packet, at: index)
    }

    /// The remembered lost packets that `range` acknowledges after all; they are
    /// forgotten, and the tolerance widens (once per round trip).
    mutating func spuriouslyLost(in range: ClosedRange<UInt64>, now: PTCPInstant, rtt: RTTEstimator) -> [Declared] {
        guard !declared.isEmpty, range.upperBound >= declared[0].number else { return [] }
        var low = 0, high = declared.count
        while low < high {
            let mid = (low + high) / 2
            if declared[mid].number < range.lowerBound { low = mid + 1 } else { high = mid }
        }
        var end = low
        while end < declared.count, declared[end].number <= range.upperBound { end += 1 }
        guard end > low else { return [] }
        let found = Array(declared[low..<end])
        declared.removeSubrange(low..<end)
        reorderingSeen = true
        let round = rtt.smoothed ?? rtt.latest
        if lastWidenedAt.map({ now - $0 >= round }) ?? true {
            let quiet = lastWidenedAt.map { now - $0 >= round * Self.decayRounds } ?? false
            steps = quiet ? 1 : steps + 1
            lastWidenedAt = now
        }
        return found
    }

    /// An acknowledgement that was coming has come within a few round trips; older
    /// losses were real.
    private mutating func forgetExpired(now: PTCPInstant, rtt: RTTEstimator) {
        let horizon = max(rtt.smoothed ?? rtt.latest, rtt.latest) * 4 + RTTEstimator.minimumRTO
        declared.removeAll { $0.declaredAt + horizon <= now }
    }
}

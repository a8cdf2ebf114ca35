/// What a congestion controller learns from one acknowledgement: the delivery rate
/// over the packet's flight (as BBR defines it), the RTT, and whether the sender was
/// holding back for lack of data (an app-limited sample underestimates the path).
struct DeliveryRateSample: Sendable {
    var bytesPerSecond: Double
    var rtt: Duration
    var isAppLimited: Bool
    /// Bytes delivered on the connection when the acknowledged packet was sent.
    var priorDelivered: Int
    /// The packet overtook older ones still outstanding, or its acknowledgement overtook
    /// the peer's earlier packets: the RTT is real but shorter than the path's usual
    /// one, and must not become the minimum. (A path that sends some packets ahead of
    /// the queue otherwise gives BBR a minimum RTT of a millisecond on a 200 ms path,
    /// and a window of four packets.)
    var overtook = false
}

/// The congestion controllers PTCP offers.
public enum PTCPCongestionControl: String, Sendable, CaseIterable {
    /// Model-based (BBR v1's bandwidth and min-RTT model, paced): random loss does not
    /// shrink the window, so a lossy long link stays full.
    case bbr
    /// Loss-based NewReno (RFC 6582/5681), paced at its window per RTT.
    case newReno = "newreno"
}

/// How fast and how much a connection may send. Fed by the connection's loss
/// detection; all sizes are bytes.
protocol CongestionController: Sendable {
    var congestionWindow: Int { get }
    /// Bytes per second to pace at; nil before anything is known (send the window).
    var pacingRate: Double? { get }
    mutating func onAcknowledged(bytes: Int, sample: DeliveryRateSample?, delivered: Int, bytesInFlight: Int,
                                 rtt: RTTEstimator, now: PTCPInstant)
    /// Packets were declared lost; `sentAt` is when the newest of them was sent.
    mutating func onLost(bytes: Int, sentAt: PTCPInstant, bytesInFlight: Int, now: PTCPInstant)
    mutating func onRetransmissionTimeout()
    /// Times the window was cut to re-measure the path's delay (BBR's ProbeRTT).
    var pathDelayProbes: Int { get }
}

extension CongestionController {
    var pathDelayProbes: Int { 0 }
}

func makeCongestionController(_ kind: PTCPCongestionControl, segmentSize: Int) -> any CongestionController {
    switch kind {
    case .bbr: BBRController(segmentSize: segmentSize)
    case .newReno: NewRenoController(segmentSize: segmentSize)
    }
}

/// NewReno: slow start to ssthresh, then one segment per RTT; halve once per loss
/// episode (losses of packets sent before the episode began do not halve again).
struct NewRenoController: CongestionController {
    let segmentSize: Int
    private(set) var congestionWindow: Int
    private var slowStartThreshold = Int.max
    private var recoveryStart: PTCPInstant?
    private var smoothedRTT: Duration?
    private var bytesAcknowledgedInAvoidance = 0

    init(segmentSize: Int) {
        self.segmentSize = segmentSize
        congestionWindow = 10 * segmentSize
    }

    var pacingRate: Double? {
        guard let smoothedRTT, smoothedRTT > .zero else { return nil }
        let gain = congestionWindow < slowStartThreshold ? 2.0 : 1.25
        return gain * Double(congestionWindow) / smoothedRTT.seconds
    }

    mutating func onAcknowledged(bytes: Int, sample: DeliveryRateSample?, delivered: Int, bytesInFlight: Int,
                                 rtt: RTTEstimator, now: PTCPInstant) {
        smoothedRTT = rtt.smoothed
        if congestionWindow < slowStartThreshold {
            congestionWindow += bytes
        } else {
            bytesAcknowledgedInAvoidance += bytes
            if bytesAcknowledgedInAvoidance >= congestionWindow {
                bytesAcknowledgedInAvoidance -= congestionWindow
                congestionWindow += segmentSize
            }
        }
    }

    mutating func onLost(bytes: Int, sentAt: PTCPInstant, bytesInFlight: Int, now: PTCPInstant) {
        if let recoveryStart, sentAt <= recoveryStart { return }
        recoveryStart = now
        congestionWindow = max(congestionWindow / 2, 2 * segmentSize)
        slowStartThreshold = congestionWindow
    }

    mutating func onRetransmissionTimeout() {
        slowStartThreshold = max(congestionWindow / 2, 2 * segmentSize)
        congestionWindow = 2 * segmentSize
    }
}

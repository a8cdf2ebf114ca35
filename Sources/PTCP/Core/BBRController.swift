/// A BBR v1 style controller (Cardwell et al., "BBR: Congestion-Based Congestion
/// Control", and draft-cardwell-iccrg-bbr-congestion-control-00): it models the path
/// as a bottleneck bandwidth (the highest delivery rate of the last 10 rounds) and a
/// propagation delay (the lowest RTT of the last 10 s), paces at gain × bandwidth and
/// keeps about two bandwidth-delay products in flight. Random loss does not change the
/// model, which is why a 1 %-loss link stays full where loss-based controllers collapse.
struct BBRController: CongestionController {
    enum Mode: Sendable { case startup, drain, probeBandwidth, probeRTT }

    static let startupGain = 2.885          // 2/ln 2
    static let probeGains: [Double] = [1.25, 0.75, 1, 1, 1, 1, 1, 1]
    static let bandwidthWindowRounds = 10
    static let minRTTWindow: Duration = .seconds(10)
    static let probeRTTDuration: Duration = .milliseconds(200)

    let segmentSize: Int
    private(set) var mode = Mode.startup
    private(set) var congestionWindow: Int
    private var pacingGain = startupGain
    private var windowGain = startupGain

    /// Best delivery rate seen in each of the last rounds: (round, bytes/s).
    private var bandwidthSamples: [(round: Int, rate: Double)] = []
    private(set) var bandwidth: Double = 0
    private var minRTT: Duration?
    private var minRTTStamp = PTCPInstant.zero

    private var round = 0
    private var nextRoundDelivered = 0
    private var roundStart = false

    private var fullBandwidth: Double = 0
    private var fullBandwidthRounds = 0
    private var filledPipe = false

    private var cycleIndex = 0
    private var cycleStamp = PTCPInstant.zero

    private var probeRTTDone: PTCPInstant?

    // Acknowledgement aggregation (Linux BBR's extra_acked): when acknowledgements come
    // in bursts — a receiver that answers a whole socket read with one, offloads,
    // Wi-Fi — more is acknowledged in a moment than the bandwidth explains. The window
    // keeps that much more in flight, or the sender would stall between bursts.
    static let ackEpochResetBytes = 1 << 20
    private var ackEpochStart: PTCPInstant?
    private var ackEpochAcked = 0
    /// Largest excess seen in each of the last rounds: (round, bytes).
    private var extraAckedSamples: [(round: Int, bytes: Int)] = []
    private var extraAcked = 0
    private var savedWindow = 0
    private var initialPacingRate: Double?

    init(segmentSize: Int) {
        self.segmentSize = segmentSize
        congestionWindow = 10 * segmentSize
    }

    var pacingRate: Double? {
        guard bandwidth > 0 else { return initialPacingRate }
        let rate = pacingGain * bandwidth
        // In startup the model is still growing: never pace below the first estimate.
        if mode == .startup, let initial = initialPacingRate { return max(rate, initial) }
        return rate
    }

    private var bandwidthDelayProduct: Int? {
        guard let minRTT, bandwidth > 0 else { return nil }
        return Int(bandwidth * minRTT.seconds)
    }

    private func targetWindow(gain: Double) -> Int {
        guard let bdp = bandwidthDelayProduct else { return 10 * segmentSize }
        return max(Int(gain * Double(bdp)) + quantizationBudget, 4 * segmentSize)
    }

    /// Linux BBR's quantization budget: three send bursts (see ``Pacer``) beyond the
    /// model's window, so that a sender that sends in bursts, and acknowledgements that
    /// come back in bursts, do not stall it.
    private var quantizationBudget: Int {
        3 * Pacer.burstSize(rate: pacingGain * bandwidth, datagramSize: segmentSize)
    }

    mutating func onAcknowledged(bytes: Int, sample: DeliveryRateSample?, delivered: Int, bytesInFlight: Int,
                                 rtt: RTTEstimator, now: PTCPInstant) {
        if initialPacingRate == nil, let smoothed = rtt.smoothed, smoothed > .zero {
            initialPacingRate = Self.startupGain * Double(congestionWindow) / smoothed.seconds
        }
        roundStart = false
        if let sample {
            if sample.priorDelivered >= nextRoundDelivered {
                nextRoundDelivered = delivered
                round += 1
                roundStart = true
            }
            updateBandwidth(sample)
            if !sample.overtook { updateMinRTT(sample.rtt, now: now) }
        }
        checkFullPipe(appLimited: sample?.isAppLimited ?? true)
        advanceMode(bytesInFlight: bytesInFlight, now: now)
        updateAckAggregation(acknowledged: bytes, now: now)
        updateWindow(acknowledged: bytes, delivered: delivered)
    }

    private mutating func updateAckAggregation(acknowledged: Int, now: PTCPInstant) {
        guard bandwidth > 0, acknowledged > 0 else { return }
        var expected = ackEpochStart.map { Int(bandwidth * (now - $0).seconds) } ?? 0
        // A new epoch when the acknowledgements fell behind the model (no burst now).
        if ackEpochStart == nil || ackEpochAcked <= expected || ackEpochAcked + acknowledged >= Self.ackEpochResetBytes {
            ackEpochStart = now
            ackEpochAcked = 0
            expected = 0
        }
        ackEpochAcked += acknowledged
        let extra = min(ackEpochAcked - expected, congestionWindow)
        if let last = extraAckedSamples.last, last.round == round {
            extraAckedSamples[extraAckedSamples.count - 1].bytes = max(last.bytes, extra)
        } else {
            extraAckedSamples.append((round, extra))
        }
        extraAckedSamples.removeAll { $0.round <= round - Self.bandwidthWindowRounds }
        extraAcked = extraAckedSamples.map(\.bytes).max() ?? 0
    }

    /// What the window adds for aggregated acknowledgements: once the pipe is full (as
    /// Linux does), and never more than 100 ms at the bottleneck rate.
    private var aggregationAllowance: Int {
        guard filledPipe else { return 0 }
        return min(extraAcked, Int(bandwidth * 0.1))
    }

    private mutating func updateBandwidth(_ sample: DeliveryRateSample) {
        guard sample.bytesPerSecond > 0 else { return }
        // An app-limited sample only counts when it beats the model (it cannot overstate).
        guard !sample.isAppLimited || sample.bytesPerSecond >= bandwidth else { return }
        if let last = bandwidthSamples.last, last.round == round {
            bandwidthSamples[bandwidthSamples.count - 1].rate = max(last.rate, sample.bytesPerSecond)
        } else {
            bandwidthSamples.append((round, sample.bytesPerSecond))
        }
        bandwidthSamples.removeAll { $0.round <= round - Self.bandwidthWindowRounds }
        bandwidth = bandwidthSamples.map(\.rate).max() ?? 0
    }

    /// How far above the minimum an RTT sample may be and still confirm it: a quarter
    /// of it, and at least a millisecond, since a user-space stack's samples carry its
    /// own scheduling (an event-loop wakeup, a batch of datagrams read at once) even
    /// when nothing is queued on the path.
    private static func confirmationSlack(_ minRTT: Duration) -> Duration {
        max(minRTT / 4, .milliseconds(1))
    }

    private mutating func updateMinRTT(_ rtt: Duration, now: PTCPInstant) {
        if let minRTT, rtt > minRTT, rtt <= minRTT + Self.confirmationSlack(minRTT), mode != .probeRTT {
            // The path's delay stands and no queue of ours hides it: nothing for
            // ProbeRTT to drain, which would cost 200 ms at four packets in flight.
            minRTTStamp = now
        }
        let expired = now - minRTTStamp > Self.minRTTWindow
        if minRTT == nil || rtt <= minRTT! || (expired && mode != .probeRTT) {
            if let minRTT, expired, rtt > minRTT, mode != .probeRTT, filledPipe {
                // The old minimum is stale: drain the queue for a moment to see the path again.
                enterProbeRTT(now: now)
            }
            minRTT = rtt
            minRTTStamp = now
        }
    }

    private(set) var pathDelayProbes = 0

    private mutating func enterProbeRTT(now: PTCPInstant) {
        pathDelayProbes += 1
        mode = .probeRTT
        pacingGain = 1
        windowGain = 1
        savedWindow = max(savedWindow, congestionWindow)
        probeRTTDone = now + Self.probeRTTDuration
    }

    private mutating func checkFullPipe(appLimited: Bool) {
        guard !filledPipe, roundStart, !appLimited else { return }
        if bandwidth >= fullBandwidth * 1.25 {
            fullBandwidth = bandwidth
            fullBandwidthRounds = 0
            return
        }
        fullBandwidthRounds += 1
        if fullBandwidthRounds >= 3 { filledPipe = true }
    }

    private mutating func advanceMode(bytesInFlight: Int, now: PTCPInstant) {
        switch mode {
        case .startup:
            if filledPipe {
                mode = .drain
                pacingGain = 1 / Self.startupGain
                windowGain = Self.startupGain
            }
        case .drain:
            if bytesInFlight <= targetWindow(gain: 1) { enterProbeBandwidth(now: now) }
        case .probeBandwidth:
            guard let minRTT else { return }
            let gain = Self.probeGains[cycleIndex]
            var advance = now - cycleStamp > minRTT
            if gain < 1, bytesInFlight <= targetWindow(gain: 1) { advance = true }
            if advance {
                cycleIndex = (cycleIndex + 1) % Self.probeGains.count
                cycleStamp = now
                pacingGain = Self.probeGains[cycleIndex]
            }
        case .probeRTT:
            if let done = probeRTTDone, now >= done {
                probeRTTDone = nil
                congestionWindow = max(congestionWindow, savedWindow)
                savedWindow = 0
                minRTTStamp = now
                if filledPipe { enterProbeBandwidth(now: now) } else {
                    mode = .startup
                    pacingGain = Self.startupGain
                    windowGain = Self.startupGain
                }
            }
        }
    }

    private mutating func enterProbeBandwidth(now: PTCPInstant) {
        mode = .probeBandwidth
        windowGain = 2
        // Start anywhere but the draining phase, as BBR does, so flows do not align.
        cycleIndex = [0, 2, 3, 4, 5, 6, 7][(round &* 7) % 7]
        pacingGain = Self.probeGains[cycleIndex]
        cycleStamp = now
    }

    private mutating func updateWindow(acknowledged: Int, delivered: Int) {
        if mode == .probeRTT {
            congestionWindow = 4 * segmentSize
            return
        }
        let target = targetWindow(gain: windowGain) + aggregationAllowance
        if filledPipe {
            congestionWindow = min(congestionWindow + acknowledged, target)
        } else if congestionWindow < target || delivered < 10 * segmentSize {
            congestionWindow += acknowledged
        }
        congestionWindow = max(congestionWindow, 4 * segmentSize)
    }

    mutating func onLost(bytes: Int, sentAt: PTCPInstant, bytesInFlight: Int, now: PTCPInstant) {
        // BBR v1 keeps its model through random loss; the retransmissions are sent
        // within the same window.
    }

    mutating func onRetransmissionTimeout() {
        // A whole window vanished: restart from what the model says fits, not from one
        // segment, and let acknowledgements rebuild it.
        congestionWindow = max(4 * segmentSize, min(congestionWindow, targetWindow(gain: 1)))
    }
}

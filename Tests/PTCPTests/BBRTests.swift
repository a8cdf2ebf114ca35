@testable import PTCP
import Testing

/// BBR's model fed by hand: a flow at 100 Mbit/s over a 10 ms path.
@Suite("BBR controller")
struct BBRTests {
    struct Flow {
        var bbr = BBRController(segmentSize: 1400)
        var rtt = RTTEstimator(initialRTO: .seconds(1))
        var now = PTCPInstant(nanoseconds: 1_000_000_000)
        var delivered = 0

        /// Acknowledges a millisecond's worth of data whose samples show `sampleRTT`.
        mutating func run(for duration: Duration, sampleRTT: Duration) {
            let end = now + duration
            while now < end {
                now = now + .milliseconds(1)
                let bytes = 12_500
                let sample = DeliveryRateSample(bytesPerSecond: 12_500_000, rtt: sampleRTT, isAppLimited: false,
                                                priorDelivered: delivered)
                delivered += bytes
                rtt.add(sample: sampleRTT, ackDelay: .zero)
                bbr.onAcknowledged(bytes: bytes, sample: sample, delivered: delivered, bytesInFlight: 25_000, rtt: rtt, now: now)
            }
        }
    }

    @Test("samples within a millisecond of the minimum confirm it: no ProbeRTT; samples far above it for 10 s: ProbeRTT")
    func minimumRTTConfirmation() {
        var flow = Flow()
        flow.run(for: .seconds(1), sampleRTT: .milliseconds(10))   // startup sees the path's delay
        #expect(flow.bbr.mode == .probeBandwidth)
        // Jitter of a user-space stack: never the minimum again, always within 1 ms of it.
        flow.run(for: .seconds(25), sampleRTT: .microseconds(10_700))
        #expect(flow.bbr.pathDelayProbes == 0)
        // A queue of ours (or a longer route) hides the path: after 10 s, drain and look.
        flow.run(for: .seconds(11), sampleRTT: .milliseconds(20))
        #expect(flow.bbr.pathDelayProbes == 1)
    }
}

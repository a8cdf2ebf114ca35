/// Round-trip time estimation and the retransmission timeout of RFC 6298, with
/// samples corrected for the receiver's declared acknowledgement delay (as QUIC does),
/// plus the minimum RTT the congestion controller needs.
///
/// Samples are never ambiguous: packet numbers are not reused, so a retransmission's
/// acknowledgement cannot be mistaken for the original's (RFC 6298 §3's Karn rule).
struct RTTEstimator: Sendable {
    /// RFC 6298's 1 s, unless configured: it paces SYN retransmissions, which matter
    /// when a hole punch drops the first SYN.
    let initialRTO: Duration
    /// Linux's floor rather than RFC 6298's 1 s: a 1 s floor makes every tail loss on
    /// a fast link a second of silence.
    static let minimumRTO: Duration = .milliseconds(200)
    static let maximumRTO: Duration = .seconds(60)
    static let granularity: Duration = .milliseconds(1)

    private(set) var smoothed: Duration?
    private(set) var variation: Duration = .zero
    private(set) var latest: Duration = .zero
    private(set) var minimum: Duration = .seconds(3600)

    init(initialRTO: Duration = .seconds(1)) {
        self.initialRTO = initialRTO
    }

    var hasSample: Bool { smoothed != nil }

    /// RTO = SRTT + max(G, 4·RTTVAR), clamped (RFC 6298 §2).
    var retransmissionTimeout: Duration {
        guard let smoothed else { return initialRTO }
        let timeout = smoothed + max(Self.granularity, variation * 4)
        return min(max(timeout, Self.minimumRTO), Self.maximumRTO)
    }

    /// Takes a sample into the smoothed RTT; into the minimum too unless the caller
    /// decides that later (``offerMinimum(_:)``).
    mutating func add(sample: Duration, ackDelay: Duration, updatingMinimum: Bool = true) {
        guard sample > .zero else { return }
        latest = sample
        if updatingMinimum { offerMinimum(sample) }
        // Take off the receiver's delay only when what is left is still plausible.
        let adjusted = sample - ackDelay >= minimum ? sample - ackDelay : sample
        guard let current = smoothed else {
            smoothed = adjusted
            variation = adjusted / 2
            return
        }
        // RTTVAR = 3/4 RTTVAR + 1/4 |SRTT − R'|; SRTT = 7/8 SRTT + 1/8 R'.
        let deviation = current > adjusted ? current - adjusted : adjusted - current
        variation = (variation * 3 + deviation) / 4
        smoothed = (current * 7 + adjusted) / 8
    }

    mutating func offerMinimum(_ sample: Duration) {
        if sample > .zero { minimum = min(minimum, sample) }
    }

    /// Lets a new minimum be found (BBR's ProbeRTT ages the minimum out).
    mutating func resetMinimum(to value: Duration) {
        minimum = value
    }
}

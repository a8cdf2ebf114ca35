import AMP
import Q2Q

/// What a swarm knows of one peer.
struct SwarmPeer {
    /// The pieces it holds, as its `Get` and `Have`s said.
    var mask: BitArray
    /// Whether its whole have-map is known (a `Get` went one way or the other).
    var joined = false
    var connection: AMPConnection?

    // Downloading from it.
    /// Pieces asked of it by number.
    var requested: [Int: ContinuousClock.Instant] = [:]
    /// `Request -1`s it has not yet answered with a piece (it holds the whole share).
    var openChoices = 0
    /// Bytes received from it, for its rate.
    var received: Int64 = 0
    var rate = RateMeter()

    // Uploading to it.
    /// Its requests, in order (-1: our choice).
    var queue: [Int] = []
    /// Whether an upload task is serving its queue.
    var uploading = false
    /// Pieces chosen for it on -1 requests and not yet confirmed by its `Have`s: not
    /// chosen again meanwhile.
    var offered: Set<Int> = []
    var sent: Int64 = 0

    // Misbehaviour.
    /// Pieces it sent that failed verification.
    var failures = 0
    /// `Data` blocks it sent that nobody asked for, and other violations.
    var violations = 0

    init(pieceCount: Int) {
        mask = BitArray(count: pieceCount)
    }

    var outstanding: Int { requested.count + openChoices }
}

/// A rate over the last second or so (an exponentially weighted moving average).
struct RateMeter {
    private var bytes: Double = 0
    private var last: ContinuousClock.Instant?
    private(set) var bytesPerSecond: Double = 0

    mutating func add(_ count: Int, now: ContinuousClock.Instant = .now) {
        bytes += Double(count)
        guard let last else {
            self.last = now
            return
        }
        let elapsed = now - last
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard seconds >= 0.05 else { return }
        let sample = bytes / seconds
        let weight = min(1, seconds)
        bytesPerSecond = bytesPerSecond == 0 ? sample : bytesPerSecond * (1 - weight) + sample * weight
        bytes = 0
        self.last = now
    }
}

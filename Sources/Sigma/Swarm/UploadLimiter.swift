import Locking

/// Caps a node's uploads at a rate: every block sent reserves its bytes, and waits
/// until the rate allows them. Reservations are served in the order they are made, so
/// uploads to several requesters interleave block by block and share the rate evenly.
final class UploadLimiter: Sendable {
    let bytesPerSecond: Int?
    /// When the next byte may go (in the limiter's clock), at most `burst` behind now.
    private let next = Locked<ContinuousClock.Instant>(.now)
    private let burst: Duration

    init(bytesPerSecond: Int?) {
        self.bytesPerSecond = bytesPerSecond
        // A short burst: enough to keep a link busy across timer slack, not enough to
        // let a rate cap be exceeded for long.
        burst = .milliseconds(20)
    }

    /// Waits until `bytes` more may be sent.
    func acquire(_ bytes: Int) async {
        guard let bytesPerSecond else { return }
        let cost = Duration.seconds(Double(bytes) / Double(bytesPerSecond))
        let now = ContinuousClock.now
        let start = next.withLock { next in
            let start = max(next, now - burst)
            next = start + cost
            return start
        }
        if start > now { try? await Task.sleep(until: start, clock: .continuous) }
    }
}

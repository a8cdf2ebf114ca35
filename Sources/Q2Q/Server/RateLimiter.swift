import Foundation

/// A token bucket per key: `burst` attempts at once, refilled at `perHour` an hour.
/// Sans-I/O: the caller passes the time.
struct RateLimiter: Sendable {
    let burst: Double
    let perSecond: Double
    private var buckets: [String: (tokens: Double, updated: Date)] = [:]

    init(burst: Int, perHour: Int) {
        self.burst = Double(burst)
        self.perSecond = Double(perHour) / 3600
    }

    /// Takes one token for `key`; `false` when none is left.
    mutating func allow(_ key: String, now: Date) -> Bool {
        var bucket = buckets[key] ?? (burst, now)
        bucket.tokens = min(burst, bucket.tokens + now.timeIntervalSince(bucket.updated) * perSecond)
        bucket.updated = now
        let allowed = bucket.tokens >= 1
        if allowed { bucket.tokens -= 1 }
        buckets[key] = bucket
        if buckets.count > 10_000 { forgetFull(now: now) }
        return allowed
    }

    /// Whether `key` has a token left, without taking it.
    func peek(_ key: String, now: Date) -> Bool {
        guard let bucket = buckets[key] else { return true }
        return min(burst, bucket.tokens + now.timeIntervalSince(bucket.updated) * perSecond) >= 1
    }

    /// Drops buckets that have refilled, so that many sources cannot grow the table.
    private mutating func forgetFull(now: Date) {
        buckets = buckets.filter { _, bucket in
            bucket.tokens + now.timeIntervalSince(bucket.updated) * perSecond < burst
        }
    }
}

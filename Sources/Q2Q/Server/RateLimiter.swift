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

    /// Takes one token of every key in `keys`, or none when one of them has none left.
    mutating func allowAll(_ keys: [String], now: Date) -> Bool {
        guard keys.allSatisfy({ peek($0, now: now) }) else { return false }
        for key in keys { _ = allow(key, now: now) }
        return true
    }

    /// Gives back the tokens ``allowAll(_:now:)`` took (the attempt turned out right).
    mutating func refundAll(_ keys: [String], now: Date) {
        for key in keys {
            guard var bucket = buckets[key] else { continue }
            bucket.tokens = min(burst, bucket.tokens + now.timeIntervalSince(bucket.updated) * perSecond + 1)
            bucket.updated = now
            buckets[key] = bucket
        }
    }

    /// The network an address belongs to for rate limits: its /24 for IPv4, its /64 for
    /// IPv6 (one host usually has a whole /64), else the address itself.
    static func network(of address: String) -> String {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            return address.split(separator: ".").prefix(3).joined(separator: ".") + ".0/24"
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return address }
        let bytes = withUnsafeBytes(of: &v6) { Array($0.prefix(8)) }
        return stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
            .joined(separator: ":") + "::/64"
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

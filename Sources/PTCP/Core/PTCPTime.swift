/// A point in time for the sans-I/O core: nanoseconds on whatever monotonic clock the
/// caller uses (the channel uses NIO's uptime; tests use a simulated clock).
public struct PTCPInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    public static let zero = PTCPInstant(nanoseconds: 0)

    public static func < (a: PTCPInstant, b: PTCPInstant) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func + (a: PTCPInstant, b: Duration) -> PTCPInstant {
        PTCPInstant(nanoseconds: a.nanoseconds &+ b.nanoseconds)
    }

    public static func - (a: PTCPInstant, b: Duration) -> PTCPInstant {
        PTCPInstant(nanoseconds: a.nanoseconds &- b.nanoseconds)
    }

    public static func - (a: PTCPInstant, b: PTCPInstant) -> Duration {
        .nanoseconds(a.nanoseconds &- b.nanoseconds)
    }

    public var description: String { "\(Double(nanoseconds) / 1e9) s" }
}

extension Duration {
    /// Whole nanoseconds (saturating), for arithmetic on `PTCPInstant`s.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product &+ attoseconds / 1_000_000_000
    }

    package var seconds: Double { Double(nanoseconds) / 1e9 }
}

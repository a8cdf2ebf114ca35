import Foundation

/// How much slower than usual the tests run, for the deadlines they give servers, nodes
/// and their own waits. 1 normally; more under a sanitizer (`scripts/sanitize/thread`
/// sets `VERTEX_TEST_TIME_SCALE`): ThreadSanitizer slows everything 5–15×, and a
/// deadline that an uninstrumented build meets with room (a TLS handshake within a
/// server's 10 s first-box limit) is then missed although nothing is wrong.
///
/// Tests of a deadline itself give their own short values and are not scaled.
public enum TestTime {
    public static let scale: Double = {
        guard let text = ProcessInfo.processInfo.environment["VERTEX_TEST_TIME_SCALE"] else { return 1 }
        guard let value = Double(text), value >= 1, value <= 100 else {
            fatalError("VERTEX_TEST_TIME_SCALE must be a number from 1 to 100, not '\(text)'")
        }
        return value
    }()

    /// `duration`, stretched by ``scale``.
    public static func scaled(_ duration: Duration) -> Duration {
        duration * scale
    }
}

import NIOConcurrencyHelpers

/// A value behind a lock: the same shape and rules as the standard library's
/// `Synchronization.Mutex` (`withLock`, `sending` in and out), on a pthread mutex.
///
/// Why not `Mutex` itself: on Linux it locks with futexes inside the (uninstrumented)
/// standard library, so ThreadSanitizer never sees it lock, and reports every access to
/// the state it guards from two threads as a race — the suite under `--sanitize=thread`
/// drowned in false reports. A pthread mutex is intercepted by ThreadSanitizer, which
/// then checks what the lock really orders.
public final class Locked<Value: ~Copyable>: @unchecked Sendable {
    private let lock = NIOLock()
    private var value: Value

    public init(_ initialValue: consuming sending Value) {
        value = initialValue
    }

    /// Runs `body` with the value, while no other thread can.
    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

import Locking

/// A version number that moves on every change, and waiters for the next one: each
/// page's event stream waits here, so a burst of changes (progress ticks) costs one
/// snapshot per wait rather than one per change.
final class ChangeSignal: Sendable {
    private struct State {
        var version = 0
        var waiters: [Int: CheckedContinuation<Int, Never>] = [:]
        var nextWaiter = 0
        /// Waits in progress, and those of them whose patience ran out before their
        /// continuation was registered.
        var waiting: Set<Int> = []
        var expired: Set<Int> = []
    }

    private let state = Locked(State())

    /// Moves the version on and wakes every waiter.
    func changed() {
        let (version, waiters) = state.withLock { state in
            state.version += 1
            defer { state.waiters.removeAll() }
            return (state.version, Array(state.waiters.values))
        }
        for waiter in waiters { waiter.resume(returning: version) }
    }

    /// The version once it is past `seen`, or the current one after `patience` (so that
    /// a caller can send a keep-alive and find out whether its reader is still there).
    func wait(after seen: Int, patience: Duration) async -> Int {
        let key = state.withLock { state -> Int in
            state.nextWaiter += 1
            state.waiting.insert(state.nextWaiter)
            return state.nextWaiter
        }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: patience)
            self?.release(key)
        }
        defer {
            timer.cancel()
            state.withLock { state in
                state.waiting.remove(key)
                state.expired.remove(key)
            }
        }
        return await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Int? in
                if state.version != seen || state.expired.contains(key) { return state.version }
                state.waiters[key] = continuation
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    private func release(_ key: Int) {
        let (version, waiter) = state.withLock { state in
            let waiter = state.waiters.removeValue(forKey: key)
            if waiter == nil, state.waiting.contains(key) { state.expired.insert(key) }
            return (state.version, waiter)
        }
        waiter?.resume(returning: version)
    }
}

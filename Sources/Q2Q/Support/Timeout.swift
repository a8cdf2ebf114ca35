import Locking

/// The operation did not finish in time.
public struct Q2QTimeoutError: Error, Sendable, CustomStringConvertible {
    public var what: String
    public var description: String { "\(what) timed out" }
}

/// Runs `body`, cancelling it and throwing ``Q2QTimeoutError`` after `timeout`.
///
/// Returns at the deadline even when `body` ignores cancellation (a future's `get()`,
/// a continuation nobody resumes): a task group would wait for it, and a silent peer
/// would then hold the caller forever. Such a body runs on until it ends by itself,
/// its result dropped.
public func withTimeout<Result: Sendable>(_ timeout: Duration, _ what: String,
                                          _ body: @escaping @Sendable () async throws -> Result) async throws -> Result {
    let race = TimeoutRace<Result>()
    let work = Task {
        do {
            race.finish(with: .success(try await body()))
        } catch {
            race.finish(with: .failure(error))
        }
    }
    let timer = Task {
        try await Task.sleep(for: timeout)
        race.finish(with: .failure(Q2QTimeoutError(what: what)))
    }
    defer {
        work.cancel()
        timer.cancel()
    }
    return try await withTaskCancellationHandler {
        try await withUnsafeThrowingContinuation { continuation in
            race.wait(continuation)
        }
    } onCancel: {
        race.finish(with: .failure(CancellationError()))
    }
}

/// The first outcome wins; the waiting caller is resumed exactly once, whichever of
/// the outcome and the caller's wait comes first.
private final class TimeoutRace<Result: Sendable>: Sendable {
    private enum State {
        case waiting(UnsafeContinuation<Result, any Error>?)
        case finished(Swift.Result<Result, any Error>?)
    }

    private let state = Locked(State.waiting(nil))

    func wait(_ continuation: UnsafeContinuation<Result, any Error>) {
        let outcome = state.withLock { state -> Swift.Result<Result, any Error>? in
            switch state {
            case .waiting:
                state = .waiting(continuation)
                return nil
            case .finished(let outcome):
                state = .finished(nil)
                return outcome
            }
        }
        if let outcome { continuation.resume(with: outcome) }
    }

    func finish(with outcome: Swift.Result<Result, any Error>) {
        let waiter = state.withLock { state -> UnsafeContinuation<Result, any Error>? in
            switch state {
            case .waiting(let continuation):
                state = .finished(continuation == nil ? outcome : nil)
                return continuation
            case .finished:
                return nil
            }
        }
        waiter?.resume(with: outcome)
    }
}

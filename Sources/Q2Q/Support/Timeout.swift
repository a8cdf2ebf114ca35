/// The operation did not finish in time.
public struct Q2QTimeoutError: Error, Sendable, CustomStringConvertible {
    public var what: String
    public var description: String { "\(what) timed out" }
}

/// Runs `body`, cancelling it and throwing ``Q2QTimeoutError`` after `timeout`.
func withTimeout<Result: Sendable>(_ timeout: Duration, _ what: String,
                                   _ body: @escaping @Sendable () async throws -> Result) async throws -> Result {
    try await withThrowingTaskGroup(of: Result.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw Q2QTimeoutError(what: what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Happy Eyeballs for connection methods: attempts start in order, each `stagger`
/// after the previous one or as soon as it fails; the first success wins, the others
/// are cancelled, and a success that arrives after the winner is handed to `discard`
/// so that its resources are released.
struct MethodRacer<Outcome: Sendable> {
    struct Attempt: Sendable {
        var label: String
        var run: @Sendable () async throws -> Outcome
    }

    /// Every attempt failed; each failure with its attempt's label.
    struct AllFailed: Error, CustomStringConvertible {
        var failures: [(label: String, error: any Error)]
        var description: String {
            failures.isEmpty ? "no method to try"
                : failures.map { "\($0.label): \($0.error)" }.joined(separator: "; ")
        }
    }

    var stagger: Duration
    var discard: @Sendable (Outcome) async -> Void

    private enum Event: Sendable {
        case finished(Int, Result<Outcome, any Error>)
        case timer(Int)
    }

    func race(_ attempts: [Attempt]) async throws -> (Outcome, label: String) {
        guard !attempts.isEmpty else { throw AllFailed(failures: []) }
        return try await withThrowingTaskGroup(of: Event.self) { group in
            var next = 0
            var running = 0
            var failures: [(label: String, error: any Error)] = []
            func start() {
                let index = next
                next += 1
                running += 1
                let attempt = attempts[index]
                group.addTask {
                    do {
                        return .finished(index, .success(try await attempt.run()))
                    } catch {
                        return .finished(index, .failure(error))
                    }
                }
                if next < attempts.count {
                    group.addTask { [stagger] in
                        try? await Task.sleep(for: stagger)
                        return .timer(index)
                    }
                }
            }
            start()
            while let event = try await group.next() {
                switch event {
                case .timer(let index):
                    // Start the next attempt unless one already started after `index`.
                    if index == next - 1, next < attempts.count { start() }
                case .finished(let index, .failure(let error)):
                    running -= 1
                    failures.append((attempts[index].label, error))
                    if next < attempts.count {
                        start()
                    } else if running == 0 {
                        group.cancelAll()
                        throw AllFailed(failures: failures)
                    }
                case .finished(let index, .success(let outcome)):
                    group.cancelAll()
                    // Late successes from attempts already past their point of no return.
                    while let late = try? await group.next() {
                        if case .finished(_, .success(let extra)) = late { await discard(extra) }
                    }
                    return (outcome, attempts[index].label)
                }
            }
            throw AllFailed(failures: failures)
        }
    }
}

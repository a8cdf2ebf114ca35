/// Happy Eyeballs for connection methods, in waves: the attempts of a wave start
/// together; the next wave starts `stagger` after the previous one, or as soon as every
/// attempt started so far has failed. The first success wins at once; the others are
/// cancelled, and a success that arrives after the winner is handed to `discard` so that
/// its resources are released.
struct MethodRacer<Outcome: Sendable> {
    struct Attempt: Sendable {
        var label: String
        /// Attempts of a lower wave start earlier; equal waves start together.
        var wave: Int
        /// How long this attempt waits after its wave starts: a head start for the
        /// attempts of its wave that should win where both would work (kernel TCP over
        /// PTCP, IPv6 over IPv4).
        var delay: Duration
        var run: @Sendable () async throws -> Outcome

        init(label: String, wave: Int = 0, delay: Duration = .zero, run: @escaping @Sendable () async throws -> Outcome) {
            self.label = label
            self.wave = wave
            self.delay = delay
            self.run = run
        }
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

    /// The first success, as soon as it arrives: the others are cancelled and finish in
    /// the background (a TCP connect towards a silent address may take seconds to notice),
    /// their late successes handed to `discard`.
    func race(_ attempts: [Attempt]) async throws -> (Outcome, label: String) {
        guard !attempts.isEmpty else { throw AllFailed(failures: []) }
        let (results, continuation) = AsyncStream.makeStream(of: Result<(Outcome, String), any Error>.self)
        let runner = Task {
            await runToEnd(attempts) { result in
                continuation.yield(result)
                continuation.finish()
            }
        }
        return try await withTaskCancellationHandler {
            for await result in results { return try result.get() }
            throw CancellationError()
        } onCancel: {
            runner.cancel()
        }
    }

    private func runToEnd(_ attempts: [Attempt], report: @Sendable (Result<(Outcome, String), any Error>) -> Void) async {
        let waves = Dictionary(grouping: attempts.indices, by: { attempts[$0].wave }).sorted { $0.key < $1.key }.map(\.value)
        await withTaskGroup(of: Event.self) { group in
            var nextWave = 0
            var running = 0
            var failures: [(label: String, error: any Error)] = []
            func startWave() {
                let wave = nextWave
                nextWave += 1
                for index in waves[wave] {
                    running += 1
                    let attempt = attempts[index]
                    group.addTask {
                        do {
                            if attempt.delay > .zero { try await Task.sleep(for: attempt.delay) }
                            return .finished(index, .success(try await attempt.run()))
                        } catch {
                            return .finished(index, .failure(error))
                        }
                    }
                }
                if nextWave < waves.count {
                    group.addTask { [stagger] in
                        try? await Task.sleep(for: stagger)
                        return .timer(wave)
                    }
                }
            }
            startWave()
            while let event = await group.next() {
                switch event {
                case .timer(let wave):
                    // Start the next wave unless one already started after `wave`.
                    if wave == nextWave - 1, nextWave < waves.count, !Task.isCancelled { startWave() }
                case .finished(let index, .failure(let error)):
                    running -= 1
                    failures.append((attempts[index].label, error))
                    guard running == 0 else { continue }
                    if nextWave < waves.count, !Task.isCancelled {
                        startWave()
                    } else {
                        group.cancelAll()
                        report(.failure(Task.isCancelled ? CancellationError() : AllFailed(failures: failures)))
                        return
                    }
                case .finished(let index, .success(let outcome)):
                    report(.success((outcome, attempts[index].label)))
                    group.cancelAll()
                    // Late successes from attempts already past their point of no return.
                    while let late = await group.next() {
                        if case .finished(_, .success(let extra)) = late { await discard(extra) }
                    }
                    return
                }
            }
        }
    }
}

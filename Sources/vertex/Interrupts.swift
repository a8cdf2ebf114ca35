import Foundation
import Locking

/// Runs `body` until it returns or SIGINT/SIGTERM arrives; nil when interrupted.
@discardableResult
func runUntilInterrupted<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async -> Result<T, any Error>? {
    let interrupted = Interrupts.shared.next()
    return await withTaskGroup(of: Result<T, any Error>?.self) { group in
        group.addTask {
            do { return .success(try await body()) } catch { return .failure(error) }
        }
        group.addTask {
            for await _ in interrupted { return nil }
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

/// SIGINT and SIGTERM, caught for the life of the process (signals are the process's:
/// a handler installed once serves every wait; installing one per wait would undo the
/// previous one's).
final class Interrupts: @unchecked Sendable {
    static let shared = Interrupts()
    private let waiters = Waiters()
    /// Immutable after init; only their handlers run.
    private let sources: [any DispatchSourceSignal]

    private final class Waiters: Sendable {
        private let list = Locked<[AsyncStream<Void>.Continuation]>([])

        func add(_ waiter: AsyncStream<Void>.Continuation) { list.withLock { $0.append(waiter) } }

        func wakeAll() {
            let all = list.withLock { list in
                defer { list = [] }
                return list
            }
            for waiter in all {
                waiter.yield()
                waiter.finish()
            }
        }
    }

    private init() {
        var sources: [any DispatchSourceSignal] = []
        let waiters = self.waiters
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { waiters.wakeAll() }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// Yields once at the next SIGINT or SIGTERM.
    func next() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        waiters.add(continuation)
        return stream
    }
}

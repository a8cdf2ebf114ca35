import NIOCore

/// Runs Swift concurrency jobs on a NIO event loop.
///
/// Code that runs with this as its task executor preference executes on the
/// connection's own thread: an AMP call made there is written without a thread hop, and
/// its answer resumes the caller without one. Responders run this way; callers may too:
///
/// ```swift
/// try await withTaskExecutorPreference(connection.taskExecutor) {
///     for value in values { _ = try await connection.call(Sum.self, .init(values: [value])) }
/// }
/// ```
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    public init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}

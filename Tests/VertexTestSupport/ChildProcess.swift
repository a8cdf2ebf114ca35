import Foundation

/// A real child process for integration tests: started, read, and killed.
/// (Foundation's `waitUntilExit` spins on Linux when called off the main thread, so
/// the exit is observed through `terminationHandler`.)
public final class ChildProcess: @unchecked Sendable {
    public let process: Process
    /// Ends with the exit status.
    public let exited: Task<Int32, Never>
    private let lines: AsyncStream<String>.Iterator.Box

    /// Starts `executable` with `arguments`. Standard output is read line by line
    /// (``nextLine()``); standard error goes to `stderrFile`, or is discarded.
    public init(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                stderrFile: URL? = nil) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        if let stderrFile {
            _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: stderrFile)
        } else {
            process.standardError = FileHandle.nullDevice
        }
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        let reader = output.fileHandleForReading
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    continuation.yield(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
            continuation.finish()
        }
        self.process = process
        self.lines = .init(stream.makeAsyncIterator())
        self.exited = try Self.launch(process)
    }

    /// The next line of standard output; `nil` once it is closed or after `timeout`.
    public func nextLine(timeout: Duration = .seconds(30)) async -> String? {
        let box = lines
        return await withTaskGroup(of: String?.self) { group in
            group.addTask { await box.next() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    public func signal(_ signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// SIGKILL, then waits for the exit.
    public func stop() async {
        signal(SIGKILL)
        _ = await exited.value
    }

    public static func launch(_ process: Process) throws -> Task<Int32, Never> {
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { finished in
            continuation.yield(finished.terminationStatus)
            continuation.finish()
        }
        try process.run()
        return Task {
            for await status in stream { return status }
            return -1
        }
    }

    public struct Run: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs to completion and returns its status and output. With a `timeout`, a child
    /// still running then is killed (SIGKILL), so that a hang fails the test instead of
    /// stalling the run.
    public static func run(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                           input: String? = nil, timeout: Duration? = nil) async throws -> Run {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        let inputPipe = input.map { _ in Pipe() }
        process.standardInput = inputPipe ?? FileHandle.nullDevice
        let exited = try launch(process)
        if let input, let writer = inputPipe?.fileHandleForWriting {
            // Written from a thread of its own while the output is read: an input larger
            // than a pipe's buffer would otherwise block until the child read it, and the
            // child would block writing output that nobody reads yet. A child that exits
            // before reading it all must not kill the tests with SIGPIPE.
            _ = Glibc.signal(SIGPIPE, SIG_IGN)
            Thread.detachNewThread {
                try? writer.write(contentsOf: Data(input.utf8))
                try? writer.close()
            }
        }
        let pid = process.processIdentifier
        let watchdog = timeout.map { timeout in
            Task {
                try? await Task.sleep(for: timeout)   // cancelled once the child has exited
                if !Task.isCancelled { kill(pid, SIGKILL) }
            }
        }
        async let out = onOwnThread { output.fileHandleForReading.readDataToEndOfFile() }
        async let err = onOwnThread { errors.fileHandleForReading.readDataToEndOfFile() }
        let (stdout, stderr) = await (out, err)
        let status = await exited.value
        watchdog?.cancel()
        return Run(status: status, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// Runs to completion and returns standard output as bytes (standard error discarded).
    public static func runCapturingBytes(_ executable: URL, _ arguments: [String]) async throws -> Data {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let exited = try launch(process)
        let data = await onOwnThread { output.fileHandleForReading.readDataToEndOfFile() }
        _ = await exited.value
        return data
    }

    /// An executable built next to the test bundle (`swift build --build-tests` builds
    /// the package's executables into the same directory).
    public static func built(_ name: String) -> URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name)
    }

    /// `python3` found through PATH.
    public static let env = URL(fileURLWithPath: "/usr/bin/env")
}

extension AsyncStream.Iterator {
    /// Shares one iterator between calls (an iterator is a value type).
    public final class Box: @unchecked Sendable {
        private var iterator: AsyncStream.Iterator
        init(_ iterator: AsyncStream.Iterator) { self.iterator = iterator }
        func next() async -> Element? { await iterator.next() }
    }
}

/// Runs blocking work (reading a pipe to its end, waiting for a process) on a thread of
/// its own: on the cooperative pool it would hold one of its few threads (two on a
/// 2-core machine) for as long as the child runs, and starve every other test.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: body()) }
        thread.start()
    }
}

import ArgumentParser
import Foundation
import Locking
import Q2Q
import Synchronization
import VertexApps

struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send files and directories to someone's vertex receive.",
        discussion: """
            Directories are sent with everything under them. The receiver checks each \
            file's SHA-256 before it appears under its name; an interrupted send resumes \
            where it stopped when you run the same command again.

              vertex send report.pdf photos/ --from alice@example.com --to bob@example.org
            """
    )

    @Argument(help: "Files and directories to send.", completion: .file())
    var paths: [String]

    @Option(help: "Your address (an identity in your home).")
    var from: Q2QAddress

    @Option(help: "Who receives.")
    var to: Q2QAddress

    @Option(help: "auto, or some of tcp, ptcp, rptcp, relay (comma-separated).")
    var method: Q2QMethodPolicy = .auto

    @Option(help: ArgumentHelp("Send at most this many bytes per second (e.g. 500k, 20M, 1G; decimal units).",
                               valueName: "rate"))
    var limitRate: ByteRate?

    @Flag(help: "Print the summary as JSON on standard output.")
    var json = false

    @OptionGroup var node: NodeOptions

    func validate() throws {
        guard !paths.isEmpty else { throw ValidationError("Name at least one file or directory to send.") }
    }

    func run() async throws {
        let selection: FileSelection
        do {
            selection = try FileSelection(paths.map { URL(fileURLWithPath: $0) })
        } catch let error as FileTransferError {
            throw CLIError(error.description)
        }
        let q2q = try node.openNode()
        defer { Task { await q2q.shutdown() } }
        let stream: Q2QStream
        do {
            stream = try await q2q.connect(from: from, to: to, service: FileTransferMessage.service, methods: method)
        } catch let error as Q2QNodeError {
            throw CLIError(error.description)
        } catch let error as PresenceClientError {
            throw CLIError(error.description)
        }
        node.say("connected to \(stream.peer) by \(stream.method)")
        let explaining = node.verbose ? PeerDiagnosis.explainRelay(stream, policy: method, store: q2q.store, say: { [node] in node.say($0) }) : nil
        let display = ProgressDisplay(verb: "sent")
        let summary: FileSendSummary
        do {
            summary = try await FileSender.send(selection, over: stream, maximumRate: limitRate?.bytesPerSecond) {
                display.update($0, of: $1)
            }
        } catch let error as FileTransferError {
            display.finish()
            throw CLIError(error.description)
        }
        display.finish()
        await explaining?.value
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(JSONSummary(summary, to: stream.peer)), as: UTF8.self))
        } else {
            let count = summary.files.count == 1 ? "1 file" : "\(summary.files.count) files"
            let resumed = summary.bytesSent < summary.totalBytes ? " (resumed: \(ByteCount(summary.bytesSent)) sent)" : ""
            print("sent \(count), \(ByteCount(summary.totalBytes))\(resumed) in \(String(format: "%.1f", summary.seconds)) s "
                + "(\(ByteCount.rate(summary.bytesSent, summary.seconds))) to \(stream.peer) by \(summary.method); verified (SHA-256)")
        }
    }

    struct JSONSummary: Encodable {
        var to: String
        var files: [String]
        var bytesSent: Int64
        var totalBytes: Int64
        var seconds: Double
        var megabytesPerSecond: Double
        var method: String
        var verified: Bool

        init(_ summary: FileSendSummary, to peer: Q2QAddress) {
            to = peer.description
            files = summary.files
            bytesSent = summary.bytesSent
            totalBytes = summary.totalBytes
            seconds = summary.seconds
            megabytesPerSecond = summary.seconds > 0 ? Double(summary.bytesSent) / summary.seconds / 1_000_000 : 0
            method = summary.method
            verified = summary.verified
        }
    }
}

struct ReceiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Receive files sent with vertex send.",
        discussion: """
            Listens as --as for the file-transfer service. Senders you authorized \
            (vertex authorize) or named with --accept-from are accepted; anyone else is \
            asked about on the terminal, with every offered path shown, or refused when \
            there is none (unless --yes). Files go to ~/Downloads/vertex unless --to; \
            hidden paths (a name starting with '.') are refused unless --allow-hidden. \
            Up to \(ReceiveCommand.concurrentTransfers) transfers run at once; a sender \
            silent for a minute is dropped. Ends after the first complete transfer \
            unless --keep-listening.

              vertex receive --as bob@example.org --to ~/Downloads --accept-from alice@example.com
            """
    )

    /// Transfers received at once; more senders are turned away until one ends.
    static let concurrentTransfers = 4

    /// Where files go without --to: a directory of their own, never the current one (a
    /// receive started from the home directory must not take files into it).
    static var defaultDirectory: URL {
        FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent("Downloads/vertex")
    }

    @Option(name: .customLong("as"), help: "Your address (an identity in your home).")
    var address: Q2QAddress

    @Option(help: ArgumentHelp("Where received files go (default: ~/Downloads/vertex, created if missing).", valueName: "dir"),
            completion: .directory)
    var to: String?

    @Flag(help: "Accept offered paths with hidden components (names starting with '.').")
    var allowHidden = false

    @Option(help: ArgumentHelp("Accept files from this sender without asking (repeatable).", valueName: "address"))
    var acceptFrom: [Q2QAddress] = []

    @Flag(help: "Accept files from anyone without asking.")
    var yes = false

    @Flag(help: "Keep receiving after the first complete transfer.")
    var keepListening = false

    @OptionGroup var node: NodeOptions

    func run() async throws {
        let directory = try downloadDirectory(to)
        let store = try node.home.openStore()
        let trusted = Set(try await store.authorizedSenders(for: address) + acceptFrom)
        let q2q = try node.openNode()
        let listener: Q2QListener
        do {
            listener = try await q2q.listen(as: address, service: FileTransferMessage.service, description: "vertex receive")
        } catch let error as Q2QNodeError {
            throw CLIError(error.description)
        } catch let error as PresenceClientError {
            throw CLIError(error.description)
        }
        print("receiving files for \(address) into \(directory.path)")
        fflush(nil)
        let askOnTerminal = isatty(STDIN_FILENO) == 1
        let terminal = Terminal()
        let options = FileReceiver.Options(allowHidden: allowHidden)
        let decide: FileReceiver.Decision = { [yes, address] offer, peer in
            if yes || trusted.contains(peer) { return nil }
            guard askOnTerminal else {
                return "\(address) does not take files from \(peer) (they can run: vertex authorize \(address) \(peer))"
            }
            return await terminal.ask(offer, from: peer) ? nil : "\(address) declined"
        }
        let running = RunningTransfers()
        let keepListening = keepListening
        // Until the job is done, or Ctrl-C or SIGTERM; then the node stops cleanly.
        await runUntilInterrupted {
            await withDiscardingTaskGroup { group in
                for await stream in listener.connections {
                    // Transfers run side by side up to a limit; beyond it a sender is turned
                    // away rather than queued without bound.
                    guard running.start(limit: Self.concurrentTransfers) else {
                        node.say("\(stream.peer) turned away: \(Self.concurrentTransfers) transfers are running")
                        try? await stream.channel.channel.close()
                        continue
                    }
                    node.say("\(stream.peer) connected by \(stream.method)")
                    group.addTask {
                        let completed = await Self.receive(stream, into: directory, options: options, decide: decide)
                        running.end()
                        // One complete transfer is the job: stop taking senders (those still
                        // running finish).
                        if completed, !keepListening { await listener.close() }
                    }
                }
            }
        }
        await listener.close()
        await q2q.shutdown()
    }

    /// One transfer, reported on the terminal; whether it completed.
    private static func receive(_ stream: Q2QStream, into directory: URL, options: FileReceiver.Options,
                                decide: @escaping FileReceiver.Decision) async -> Bool {
        let display = ProgressDisplay(verb: "received")
        do {
            let summary = try await FileReceiver.receive(stream, into: directory, options: options, decide: decide) { display.update($0, of: $1) }
            display.finish()
            let names = summary.files.map { $0.path.replacingOccurrences(of: directory.path + "/", with: "") }
            print("received \(names.count == 1 ? "1 file" : "\(names.count) files") (\(ByteCount(summary.bytesReceived))) "
                + "from \(summary.peer) by \(stream.method), verified (SHA-256): \(names.joined(separator: ", "))")
            fflush(nil)
            return true
        } catch {
            display.finish()
            FileHandle.standardError.write(Data("vertex receive: \(error)\n".utf8))
            return false
        }
    }

    /// How many transfers run now.
    final class RunningTransfers: Sendable {
        private let count = Atomic<Int>(0)

        /// Counts one more, unless `limit` run already.
        func start(limit: Int) -> Bool {
            guard count.wrappingAdd(1, ordering: .relaxed).newValue <= limit else {
                count.wrappingSubtract(1, ordering: .relaxed)
                return false
            }
            return true
        }

        func end() { count.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// The terminal, asked one question at a time (transfers run side by side).
    actor Terminal {
        /// Asks whether to take `offer` from `peer`, showing every path it would write.
        func ask(_ offer: FileTransferMessage.Offer, from peer: Q2QAddress) async -> Bool {
            var question = "\(peer) offers \(offer.files.count == 1 ? "1 file" : "\(offer.files.count) files") "
                + "(\(ByteCount(offer.totalBytes))):\n"
            for file in offer.files { question += "  \(file.name.debugDescription.dropFirst().dropLast())  (\(ByteCount(file.size)))\n" }
            question += "Accept? [y/N] "
            FileHandle.standardError.write(Data(question.utf8))
            let answer = await Task.detached { readLine() }.value
            return answer.map { ["y", "yes"].contains($0.trimmingCharacters(in: .whitespaces).lowercased()) } ?? false
        }
    }
}

/// Where received files go: --to, which must exist, or ~/Downloads/vertex, made if
/// missing (vertex receive, vertex sigma get and receive).
func downloadDirectory(_ to: String?) throws -> URL {
    let directory = to.map { URL(fileURLWithPath: $0).standardizedFileURL } ?? ReceiveCommand.defaultDirectory
    if to == nil, !FileManager.default.fileExists(atPath: directory.path) {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CLIError("cannot create \(directory.path): \(error.localizedDescription)")
        }
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw CLIError("\(directory.path) is not a directory")
    }
    return directory
}

struct AuthorizeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authorize",
        abstract: "Trust a sender to send you files without being asked.",
        discussion: """
            vertex authorize bob@example.org alice@example.com      trust alice
            vertex authorize bob@example.org alice@example.com --remove
            vertex authorize bob@example.org                         list whom bob trusts
            """
    )

    @Argument(help: "You, the receiver.")
    var receiver: Q2QAddress

    @Argument(help: "The sender to trust.")
    var sender: Q2QAddress?

    @Flag(help: "Stop trusting the sender.")
    var remove = false

    @OptionGroup var home: HomeOptions

    func validate() throws {
        if remove, sender == nil { throw ValidationError("--remove needs the sender to stop trusting.") }
    }

    func run() async throws {
        let store = try home.openStore()
        guard let sender else {
            let senders = try await store.authorizedSenders(for: receiver)
            if senders.isEmpty { print("\(receiver) trusts no senders") }
            for sender in senders { print(sender) }
            return
        }
        if remove {
            guard try await store.removeAuthorization(of: sender, for: receiver) else {
                throw CLIError("\(receiver) did not trust \(sender)")
            }
            print("\(receiver) no longer trusts \(sender)")
        } else {
            try await store.authorize(sender, for: receiver, now: Date())
            print("\(receiver) trusts \(sender) to send files")
        }
    }
}

/// Progress of a transfer on standard error: a redrawn line on a terminal, a line every
/// few seconds otherwise.
final class ProgressDisplay: Sendable {
    private struct State {
        var started: ContinuousClock.Instant?
        var lastShown: ContinuousClock.Instant?
        var shownOnce = false
        var done: Int64 = 0
        var total: Int64 = 0
    }

    private let verb: String
    private let onTerminal = isatty(STDERR_FILENO) == 1
    private let state = Locked(State())

    init(verb: String) {
        self.verb = verb
    }

    func update(_ done: Int64, of total: Int64) {
        let now = ContinuousClock.now
        let line: String? = state.withLock { state in
            let started = state.started ?? now
            state.started = started
            state.done = done
            state.total = total
            let interval: Duration = onTerminal ? .milliseconds(100) : .seconds(2)
            if let last = state.lastShown, now - last < interval, done < total { return nil }
            state.lastShown = now
            state.shownOnce = true
            return Self.line(verb: verb, done: done, total: total, elapsed: now - started, terminal: onTerminal)
        }
        guard let line else { return }
        FileHandle.standardError.write(Data((onTerminal ? "\r\(line)\u{1B}[K" : "\(line)\n").utf8))
    }

    /// Ends the redrawn line.
    func finish() {
        let shown = state.withLock { $0.shownOnce }
        if onTerminal, shown { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func line(verb: String, done: Int64, total: Int64, elapsed: Duration, terminal: Bool) -> String {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let rate = seconds > 0 ? Double(done) / seconds : 0
        let eta = rate > 0 ? Int((Double(total - done) / rate).rounded()) : nil
        let etaText = eta.map { String(format: "ETA %d:%02d", $0 / 60, $0 % 60) } ?? "ETA --:--"
        let percent = String(format: "%3.0f%%", fraction * 100)
        let numbers = "\(ByteCount(done)) of \(ByteCount(total)), \(ByteCount.rate(done, seconds)), \(etaText)"
        guard terminal else { return "\(verb) \(percent): \(numbers)" }
        let width = 24
        let filled = min(width, Int(fraction * Double(width)))
        return "[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(percent) \(numbers)"
    }
}

/// Bytes for people: 1.5 MB, 12.0 GB (decimal units, as disks and networks count).
/// A rate on the command line: a number of bytes per second with an optional decimal
/// unit suffix (k, M, G).
struct ByteRate: ExpressibleByArgument {
    var bytesPerSecond: Int

    init?(argument: String) {
        let multipliers: [Character: Double] = ["k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9]
        var text = Substring(argument)
        var multiplier = 1.0
        if let last = text.last, let unit = multipliers[last] {
            multiplier = unit
            text = text.dropLast()
        }
        guard let value = Double(text), value.isFinite, value > 0, value * multiplier >= 1, value * multiplier < 1e15 else { return nil }
        bytesPerSecond = Int(value * multiplier)
    }
}

struct ByteCount: CustomStringConvertible {
    var bytes: Int64
    init(_ bytes: Int64) { self.bytes = bytes }

    var description: String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }

    static func rate(_ bytes: Int64, _ seconds: Double) -> String {
        guard seconds > 0 else { return "-- MB/s" }
        return String(format: "%.1f MB/s", Double(bytes) / seconds / 1_000_000)
    }
}

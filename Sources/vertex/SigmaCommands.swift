import ArgumentParser
import Foundation
import Logging
import Q2Q
import Sigma
import Synchronization

struct SigmaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sigma",
        abstract: "Share files with many peers at once: each fetches from everyone who holds pieces.",
        discussion: """
            A share is named by its content: a file by its BitTorrent v2 (BEP 52) hash-tree \
            root, a directory by the SHA-256 of its manifest. Every piece is checked \
            against that name before it is kept, whoever sent it. Peers reach each other \
            over Q2Q (direct, PTCP through NATs, or the relay) and fetch from everyone \
            who holds pieces, not only from the first holder.

              vertex sigma share film.mkv --as alice@example.com --allow bob@example.org
              vertex sigma get 'sigma:…' --as bob@example.org --to ~/Downloads
              vertex sigma push photos/ --from alice@example.com --to bob@example.org --to carol@example.net
              vertex sigma receive --as bob@example.org
            """,
        subcommands: [SigmaShareCommand.self, SigmaGetCommand.self, SigmaPushCommand.self, SigmaReceiveCommand.self]
    )
}

/// Options every Sigma command has.
struct SigmaOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Upload at most this many bytes per second, to all peers together (e.g. 500k, 20M).",
                               valueName: "rate"))
    var limitRate: ByteRate?

    @Flag(help: "Print JSON lines on standard output (when complete, and when stopping) instead of sentences.")
    var json = false

    @OptionGroup var node: NodeOptions

    /// Starts Sigma as `address`.
    func start(as address: Q2QAddress, receiving: SigmaNode.Receiving? = nil) async throws -> (Q2QNode, SigmaNode) {
        let q2q = try node.openNode()
        var logger = Logger(label: "vertex.sigma")
        logger.logLevel = node.verbose ? .info : .notice
        do {
            return (q2q, try await SigmaNode.start(node: q2q, as: address, uploadRate: limitRate?.bytesPerSecond, receiving: receiving,
                                                   logger: logger))
        } catch {
            await q2q.shutdown()
            throw CLIError(SigmaOptions.describe(error))
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as Q2QNodeError: error.description
        case let error as PresenceClientError: error.description
        case let error as ShareError: error.description
        default: "\(error)"
        }
    }

    /// Prints one JSON object on a line of its own.
    func emit(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(value) else { return }
        print(String(decoding: data, as: UTF8.self))
        fflush(nil)
    }

    /// Says `line` on standard output unless JSON was asked for.
    func say(_ line: String) {
        guard !json else { return }
        print(line)
        fflush(nil)
    }
}

/// A swarm's state as the JSON lines print it.
struct SigmaReport: Encodable {
    var event: String
    var share: String
    var name: String
    var location: String?
    var seconds: Double
    var statistics: SwarmStatistics
    var cpuSeconds: Double

    init(_ event: String, _ swarm: SigmaSwarm, since start: ContinuousClock.Instant) async {
        self.event = event
        share = swarm.id.description
        name = swarm.manifest.name
        location = await swarm.location?.path
        seconds = (ContinuousClock.now - start).seconds
        statistics = await swarm.currentStatistics
        cpuSeconds = processCPUSeconds()
    }
}

struct SigmaShareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "share",
        abstract: "Share a file or directory and print its link; serve it until interrupted.",
        discussion: """
            Say who may fetch it: --allow ADDRESS (repeatable; those addresses, and the peers \
            they are introduced to by holders), or --public (anyone who has the link). The \
            link goes to standard output; give it to the people who fetch.

              vertex sigma share film.mkv --as alice@example.com --allow bob@example.org --allow carol@example.net
            """
    )

    @Argument(help: "The file or directory to share.", completion: .file())
    var path: String

    @Option(name: .customLong("as"), help: "Your address (an identity in your home).")
    var address: Q2QAddress

    @Option(help: ArgumentHelp("An address that may fetch the share (repeatable).", valueName: "address"))
    var allow: [Q2QAddress] = []

    @Flag(help: "Anyone who has the link may fetch the share.")
    var `public` = false

    @Flag(help: "Stop once every piece is held by some other peer (they finish among themselves).")
    var untilDistributed = false

    @OptionGroup var sigma: SigmaOptions

    func validate() throws {
        guard !allow.isEmpty || `public` else {
            throw ValidationError("Say who may fetch the share: --allow ADDRESS (repeatable) or --public.")
        }
    }

    func run() async throws {
        let (q2q, node) = try await sigma.start(as: address)
        let started = ContinuousClock.now
        let hashing = ProgressDisplay(verb: "hashed")
        let swarm: SigmaSwarm
        do {
            swarm = try await node.share(URL(fileURLWithPath: path), access: ShareAccess(allowed: Set(allow), isPublic: `public`)) {
                hashing.update($0, of: $1)
            }
        } catch {
            hashing.finish()
            await node.shutdown()
            await q2q.shutdown()
            throw CLIError(error.description)
        }
        hashing.finish()
        let link = node.link(for: swarm)
        if sigma.json {
            sigma.emit(["event": "shared", "link": link.description])
        } else {
            print(link)
            fflush(nil)
            FileHandle.standardError.write(Data("sharing \(swarm.manifest.name) (\(ByteCount(swarm.manifest.totalSize))) as \(address); Ctrl-C stops\n".utf8))
        }
        let progress = SwarmProgress(swarm, downloading: false)
        await runUntilInterrupted {
            if untilDistributed {
                while !(await swarm.isDistributed) { try? await Task.sleep(for: .milliseconds(50)) }
            } else {
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            }
        }
        progress.stop()
        await report("stopped", swarm, since: started)
        await node.shutdown()
        await q2q.shutdown()
    }

    private func report(_ event: String, _ swarm: SigmaSwarm, since start: ContinuousClock.Instant) async {
        let report = await SigmaReport(event, swarm, since: start)
        if sigma.json { return sigma.emit(report) }
        let ratio = Double(report.statistics.bytesUploaded) / Double(max(1, report.statistics.bytesTotal))
        FileHandle.standardError.write(Data("uploaded \(ByteCount(report.statistics.bytesUploaded)) (\(String(format: "%.2f", ratio))× the share) in \(String(format: "%.1f", report.seconds)) s\n".utf8))
    }
}

struct SigmaGetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Download a share from everyone who holds it.",
        discussion: """
            Every piece is checked against the link's id before it is kept. An interrupted \
            download resumes when run again with the same --to: pieces already verified \
            are checked on disk and not fetched again. Nothing appears under the share's \
            name until the whole share verified.

              vertex sigma get 'sigma:…' --as bob@example.org --to ~/Downloads --seed
            """
    )

    @Argument(help: "The share's link (sigma:…), as vertex sigma share printed it.")
    var link: String

    @Option(name: .customLong("as"), help: "Your address (an identity in your home).")
    var address: Q2QAddress

    @Option(help: ArgumentHelp("Where the share goes (default: ~/Downloads/vertex, created if missing).", valueName: "dir"),
            completion: .directory)
    var to: String?

    @Flag(help: "Keep serving the share to other peers once it is complete, until interrupted.")
    var seed = false

    @OptionGroup var sigma: SigmaOptions

    func run() async throws {
        let link: ShareLink
        do {
            link = try ShareLink(self.link)
        } catch {
            throw CLIError(error.description)
        }
        let directory = try downloadDirectory(to)
        let (q2q, node) = try await sigma.start(as: address)
        let started = ContinuousClock.now
        let result = await download(link, into: directory, node: node, since: started)
        if case .success(let swarm) = result, seed {
            sigma.say("seeding until interrupted (Ctrl-C)")
            await runUntilInterrupted { while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) } }
            if sigma.json { sigma.emit(await SigmaReport("stopped", swarm, since: started)) }
        }
        await node.shutdown()
        await q2q.shutdown()
        if case .failure(let error) = result { throw error }
    }

    private func download(_ link: ShareLink, into directory: URL, node: SigmaNode,
                          since started: ContinuousClock.Instant) async -> Result<SigmaSwarm, CLIError> {
        let swarm: SigmaSwarm
        do {
            swarm = try await node.fetch(link, into: directory)
        } catch {
            return .failure(CLIError(error.description))
        }
        let resumed = await swarm.currentStatistics.piecesResumed
        if resumed > 0 { node.say(sigma, "resuming: \(resumed) pieces already verified on disk") }
        let progress = SwarmProgress(swarm, downloading: true)
        let outcome = await runUntilInterrupted { try await swarm.waitUntilComplete() }
        progress.stop()
        switch outcome {
        case .none:
            await swarm.close()
            return .failure(CLIError("interrupted; run the same command again to resume"))
        case .some(.failure(let error)):
            return .failure(CLIError(SigmaOptions.describe(error)))
        case .some(.success(let url)):
            let report = await SigmaReport("complete", swarm, since: started)
            if sigma.json {
                sigma.emit(report)
            } else {
                let statistics = report.statistics
                print("got \(url.path) (\(ByteCount(statistics.bytesTotal))) in \(String(format: "%.1f", report.seconds)) s "
                    + "(\(ByteCount.rate(statistics.bytesDownloaded, report.seconds))) from \(statistics.peers) peers; "
                    + "every piece verified (BEP 52 SHA-256 tree)")
                fflush(nil)
            }
            return .success(swarm)
        }
    }
}

struct SigmaPushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push a file or directory to several receivers, who fetch it from you and from each other.",
        discussion: """
            Each receiver must run vertex sigma receive and have authorized you (vertex \
            authorize RECEIVER YOU). Serves until every receiver that accepted holds the \
            whole share.

              vertex sigma push photos/ --from alice@example.com --to bob@example.org --to carol@example.net
            """
    )

    @Argument(help: "The file or directory to push.", completion: .file())
    var path: String

    @Option(help: "Your address (an identity in your home).")
    var from: Q2QAddress

    @Option(help: ArgumentHelp("A receiver (repeatable).", valueName: "address"))
    var to: [Q2QAddress]

    @OptionGroup var sigma: SigmaOptions

    func validate() throws {
        guard !to.isEmpty else { throw ValidationError("Name at least one receiver with --to.") }
    }

    func run() async throws {
        let (q2q, node) = try await sigma.start(as: from)
        let started = ContinuousClock.now
        let swarm: SigmaSwarm
        do {
            swarm = try await node.share(URL(fileURLWithPath: path), access: ShareAccess(allowed: Set(to)))
        } catch {
            await node.shutdown()
            await q2q.shutdown()
            throw CLIError(error.description)
        }
        let refusals = await node.push(swarm, to: to)
        for (receiver, reason) in refusals.sorted(by: { $0.key.description < $1.key.description }) {
            FileHandle.standardError.write(Data("\(receiver) refused: \(reason)\n".utf8))
        }
        let accepted = to.filter { refusals[$0] == nil }
        guard !accepted.isEmpty else {
            await node.shutdown()
            await q2q.shutdown()
            throw CLIError("no receiver accepted the push")
        }
        node.say(sigma, "pushed \(swarm.manifest.name) to \(accepted.map(\.description).joined(separator: ", "))")
        let progress = SwarmProgress(swarm, downloading: false)
        let finished = await runUntilInterrupted {
            while !(await swarm.haveComplete(accepted)) { try await Task.sleep(for: .milliseconds(50)) }
        }
        progress.stop()
        let report = await SigmaReport(finished == nil ? "stopped" : "delivered", swarm, since: started)
        if sigma.json {
            sigma.emit(report)
        } else if finished != nil {
            print("every receiver holds \(swarm.manifest.name) (\(ByteCount(report.statistics.bytesTotal))) after "
                + "\(String(format: "%.1f", report.seconds)) s; uploaded \(ByteCount(report.statistics.bytesUploaded))")
        }
        await node.shutdown()
        await q2q.shutdown()
        if finished == nil { throw CLIError("interrupted before every receiver held the share") }
    }
}

struct SigmaReceiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Accept shares pushed with vertex sigma push, until interrupted.",
        discussion: """
            Pushes from senders you authorized (vertex authorize) or named with \
            --accept-from are downloaded into --to (default ~/Downloads/vertex); others \
            are refused. Complete shares are served to the other receivers of the push.

              vertex sigma receive --as bob@example.org --to ~/Downloads
            """
    )

    @Option(name: .customLong("as"), help: "Your address (an identity in your home).")
    var address: Q2QAddress

    @Option(help: ArgumentHelp("Where pushed shares go (default: ~/Downloads/vertex, created if missing).", valueName: "dir"),
            completion: .directory)
    var to: String?

    @Option(help: ArgumentHelp("Accept pushes from this sender too (repeatable).", valueName: "address"))
    var acceptFrom: [Q2QAddress] = []

    @OptionGroup var sigma: SigmaOptions

    func run() async throws {
        let directory = try downloadDirectory(to)
        let store = try sigma.node.home.openStore()
        let trusted = Set(try await store.authorizedSenders(for: address) + acceptFrom)
        let receiving = SigmaNode.Receiving(directory: directory) { trusted.contains($0) }
        let (q2q, node) = try await sigma.start(as: address, receiving: receiving)
        sigma.say("receiving pushed shares for \(address) into \(directory.path)")
        let started = ContinuousClock.now
        await runUntilInterrupted {
            await withDiscardingTaskGroup { group in
                for await event in node.pushes {
                    switch event {
                    case .failed(let link, let sender, let error):
                        FileHandle.standardError.write(Data("\(link.name) from \(sender) failed: \(error)\n".utf8))
                    case .started(let swarm, let sender):
                        sigma.say("\(sender) pushed \(swarm.manifest.name) (\(ByteCount(swarm.manifest.totalSize)))")
                        group.addTask {
                            do {
                                let url = try await swarm.waitUntilComplete()
                                if sigma.json {
                                    sigma.emit(await SigmaReport("complete", swarm, since: started))
                                } else {
                                    sigma.say("got \(url.path) from \(sender); every piece verified")
                                }
                            } catch {
                                FileHandle.standardError.write(Data("\(swarm.manifest.name) from \(sender) failed: \(SigmaOptions.describe(error))\n".utf8))
                            }
                        }
                    }
                }
            }
        }
        await node.shutdown()
        await q2q.shutdown()
    }
}

extension SigmaNode {
    func say(_ options: SigmaOptions, _ line: String) {
        guard !options.json else { return }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

/// A swarm's progress on standard error: a redrawn line on a terminal (bytes, rates,
/// peers), a plain line every few seconds otherwise.
final class SwarmProgress: Sendable {
    private let task: Task<Void, Never>

    init(_ swarm: SigmaSwarm, downloading: Bool) {
        let onTerminal = isatty(STDERR_FILENO) == 1
        task = Task {
            let start = ContinuousClock.now
            var shown = false
            while !Task.isCancelled {
                try? await Task.sleep(for: onTerminal ? .milliseconds(200) : .seconds(2))
                if Task.isCancelled { break }
                let statistics = await swarm.currentStatistics
                let seconds = (ContinuousClock.now - start).seconds
                var line = downloading
                    ? String(format: "%3.0f%% ", Double(statistics.bytesHeld) * 100 / Double(max(1, statistics.bytesTotal)))
                        + "\(ByteCount(statistics.bytesHeld)) of \(ByteCount(statistics.bytesTotal)), "
                        + "\(ByteCount.rate(statistics.bytesDownloaded, seconds)) down, "
                    : ""
                line += "\(ByteCount(statistics.bytesUploaded)) up (\(ByteCount.rate(statistics.bytesUploaded, seconds))), "
                    + "\(statistics.peers) peer\(statistics.peers == 1 ? "" : "s")"
                if statistics.piecesRejected > 0 { line += ", \(statistics.piecesRejected) bad pieces dropped" }
                FileHandle.standardError.write(Data((onTerminal ? "\r\(line)\u{1B}[K" : "\(line)\n").utf8))
                shown = true
            }
            if onTerminal, shown { FileHandle.standardError.write(Data("\n".utf8)) }
        }
    }

    func stop() { task.cancel() }
}

/// CPU time this process has used (user and system).
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

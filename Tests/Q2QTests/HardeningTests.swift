import AMP
import Foundation
import NIOCore
import NIOPosix
@testable import Q2Q
import Testing
import VertexTestSupport

/// A presence server probed the way an attacker (or a careless scanner) would: many
/// connections that never authenticate, silent or stalled half-way through a box.
@Suite("Hardening: connections that never authenticate")
struct HardeningTests {
    /// A box's first key and the length of a value that never comes.
    static let halfBox: [UInt8] = [0, 8] + Array("_command".utf8) + [0, 40]
    /// `Who-Am-I`, complete: allowed in clear.
    static let whoAmI: [UInt8] = [0, 8] + Array("_command".utf8) + [0, 8] + Array("Who-Am-I".utf8)
        + [0, 4] + Array("_ask".utf8) + [0, 1] + Array("1".utf8) + [0, 0]

    /// `count` TCP connections to `port` from `source` (a loopback address of its own),
    /// each sending `bytes` (nothing when empty); their channels.
    static func open(_ count: Int, to port: Int, from source: String, sending bytes: [UInt8]) async throws -> [any Channel] {
        let local = try SocketAddress(ipAddress: source, port: 0)
        var channels: [any Channel] = []
        for _ in 0..<count {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in channel.eventLoop.makeSucceededVoidFuture() }
                .bind(to: local)
                .connect(host: "127.0.0.1", port: port).get()
            if !bytes.isEmpty { channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil) }
            channels.append(channel)
        }
        return channels
    }

    /// The fewest refusals the caps must have made while `opened` connections arrived
    /// over `elapsed`: at most `cap` are admitted per `deadline` (each admitted one holds
    /// its place until the deadline closes it), one window more for slack.
    static func leastRefusals(opened: Int, cap: Int, over elapsed: Duration, deadline: Duration) -> Int {
        let windows = 2 + Int(elapsed / deadline)
        return max(0, opened - cap * windows)
    }

    /// Waits until at most `limit` of `channels` are open (up to `patience`); how many are.
    static func open(_ channels: [any Channel], settlingAtMost limit: Int, within patience: Duration) async throws -> Int {
        let deadline = ContinuousClock.now + patience
        var active = channels.filter(\.isActive).count
        while active > limit, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            active = channels.filter(\.isActive).count
        }
        return active
    }

    @Test("2,000 connections from one source that never authenticate (silent, and half a box): capped per source, closed by the deadlines; a registered listener stays reachable and a new user registers meanwhile")
    func floodFromOneSource() async throws {
        try await withDomain(configure: {
            $0.firstBoxTimeout = .seconds(10)
            $0.partialBoxTimeout = .seconds(10)
            $0.maximumUnauthenticatedPerSource = 100
        }) { domain in
            let alice = try await makeNode("alice@\(domain.name)", in: domain)
            let bob = try await makeNode("bob@\(domain.name)", in: domain)
            let bobAddress = try Q2QAddress("bob@\(domain.name)")
            let listener = try await bob.listen(as: bobAddress, service: "echo")
            let echoing = echo(listener)

            // The flood, from 127.0.0.2: half silent, half stalled in a box.
            let started = ContinuousClock.now
            var flood = try await Self.open(1_000, to: domain.port, from: "127.0.0.2", sending: [])
            flood += try await Self.open(1_000, to: domain.port, from: "127.0.0.2", sending: Self.halfBox)
            let elapsed = ContinuousClock.now - started
            // At most the per-source cap is held; the rest were closed as they arrived.
            let held = try await Self.open(flood, settlingAtMost: 100, within: .seconds(20))
            #expect(held <= 100, "\(held) connections from one source held")
            let least = Self.leastRefusals(opened: 2_000, cap: 100, over: elapsed, deadline: .seconds(10))
            #expect(domain.server.unauthenticatedRefusals >= least, "opening the flood took \(elapsed)")

            // Meanwhile, from another address: bob is reachable, and a new user registers.
            let stream = try await alice.connect(from: try Q2QAddress("alice@\(domain.name)"), to: bobAddress, service: "echo", methods: .tcp)
            try await stream.channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "still here"))
                var iterator = inbound.makeAsyncIterator()
                #expect(try await iterator.next().map { String(buffer: $0) } == "still here")
            }
            let carol = try await makeNode("carol@\(domain.name)", in: domain)

            // Every flood connection the caps let in is closed by the deadlines (10 s).
            #expect(try await Self.open(flood, settlingAtMost: 0, within: .seconds(60)) == 0)
            #expect(domain.server.listenerCount == 1, "bob's registration is untouched")
            echoing.cancel()
            await listener.close()
            for node in [alice, bob, carol] { await node.shutdown() }
        }
    }

    @Test("past the cap on all unauthenticated connections, new ones are refused; room comes back as the deadlines close the old")
    func totalCap() async throws {
        try await withDomain(configure: {
            $0.firstBoxTimeout = .seconds(30)
            $0.maximumUnauthenticatedConnections = 50
            $0.maximumUnauthenticatedPerSource = 1_000
        }) { domain in
            let started = ContinuousClock.now
            let flood = try await Self.open(200, to: domain.port, from: "127.0.0.3", sending: [])
            let elapsed = ContinuousClock.now - started
            #expect(try await Self.open(flood, settlingAtMost: 50, within: .seconds(20)) <= 50)
            let least = Self.leastRefusals(opened: 200, cap: 50, over: elapsed, deadline: .seconds(30))
            #expect(least > 0, "opening 200 connections took \(elapsed)")
            #expect(domain.server.unauthenticatedRefusals >= least, "opening the flood took \(elapsed)")
            #expect(try await Self.open(flood, settlingAtMost: 0, within: .seconds(90)) == 0)
            // Room again: a client that speaks is served.
            let (bytes, _) = try await RawSocket.exchange(port: domain.port, bytes: Self.whoAmI, window: .seconds(2))
            #expect(String(decoding: bytes, as: UTF8.self).contains("address"))
        }
    }

    /// CPU seconds `pid` has used (user and system, from /proc).
    static func cpuSeconds(of pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command name (which may hold spaces), from field 3 on.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (Double(fields[11])! + Double(fields[12])!) / ticks
    }

    @Test("out of descriptors, vertex server pauses accepting with a log line instead of spinning, and serves again once they free")
    func descriptorExhaustion() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-fd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("server.log")
        // 64 descriptors in all (soft and hard): the server cannot raise it.
        let process = try ChildProcess(URL(fileURLWithPath: "/usr/bin/prlimit"),
                                       ["--nofile=64:64", CLITests.vertex.path, "server", "--domain", "example.test",
                                        "--data", directory.appendingPathComponent("data").path, "--port", "0", "--bind", "127.0.0.1"],
                                       stderrFile: log)
        guard let line = await process.nextLine(), let range = line.range(of: #"127\.0\.0\.1:\d+"#, options: .regularExpression),
              let port = Int(line[range].split(separator: ":")[1]) else {
            await process.stop()
            throw CLITests.CLIFailure("vertex server did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
        let pid = process.process.processIdentifier
        // More silent connections than it has descriptors (each waits out its 10 s).
        let held = try await Self.open(80, to: port, from: "127.0.0.4", sending: [])
        // At the limit once it says so (on a loaded machine the connections arrive slowly).
        var logged = ""
        for _ in 0..<100 where !logged.contains("cannot accept connections") {
            try await Task.sleep(for: .milliseconds(200))
            logged = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        }
        #expect(logged.contains("cannot accept connections"), "\(logged)")
        let before = try Self.cpuSeconds(of: pid)
        try await Task.sleep(for: .seconds(3))
        let spent = try Self.cpuSeconds(of: pid) - before
        #expect(spent < 1.0, "the server used \(spent) s of CPU in 3 s at its descriptor limit")
        // Descriptors free: it serves again.
        for channel in held { try? await channel.close() }
        var answered = false
        for _ in 0..<30 where !answered {
            let run = try await CLITests.vertex(["whoami", "--server", "127.0.0.1:\(port)"])
            answered = run.status == 0 && run.stdout.hasPrefix("127.0.0.1:")
            if !answered { try await Task.sleep(for: .milliseconds(500)) }
        }
        #expect(answered, "the server did not recover once descriptors were free")
        await process.stop()
    }

    @Test("a connection that sent a box and then stalls half-way through the next is closed by the half-box timeout, long before the unauthenticated lifetime")
    func stalledHalfBox() async throws {
        try await withDomain(configure: {
            $0.partialBoxTimeout = .seconds(2)
            $0.unauthenticatedLifetime = .seconds(300)
        }) { domain in
            let started = ContinuousClock.now
            let (bytes, closed) = try await RawSocket.exchange(port: domain.port, bytes: Self.whoAmI + Self.halfBox, window: .seconds(60))
            #expect(String(decoding: bytes, as: UTF8.self).contains("address"), "the complete box was answered")
            #expect(closed)
            #expect(ContinuousClock.now - started < .seconds(60))
        }
    }
}

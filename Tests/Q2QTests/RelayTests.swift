import AMP
import Foundation
import NIOConcurrencyHelpers
import NIOCore
@testable import Q2Q
import Testing
import VertexTestSupport

@Suite("Relayed connections (virtual channels through the presence server)")
struct RelayTests {
    static let alice = try! Q2QAddress("alice@example.test")
    static let bob = try! Q2QAddress("bob@example.test")

    /// What the relay forwarded: how many bytes, and the first 8 MiB of them.
    struct Forwarded {
        var count = 0
        var bytes: [UInt8] = []
    }

    /// A domain whose relay reports every body it forwards.
    static func withObservedDomain(_ body: (TestDomain, NIOLockedValueBox<Forwarded>) async throws -> Void) async throws {
        let forwarded = NIOLockedValueBox(Forwarded())
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-relay-\(UUID().uuidString)")
        let store = try SQLitePresenceStore(directory: directory.appendingPathComponent("data"))
        var configuration = PresenceServerConfiguration(domains: ["example.test"], host: "127.0.0.1", port: 0)
        configuration.stretchDeadlinesForTests()
        configuration.relayObserver = { buffer in
            forwarded.withLockedValue { forwarded in
                forwarded.count += buffer.readableBytes
                if forwarded.bytes.count < 8 << 20 { forwarded.bytes += buffer.readableBytesView }
            }
        }
        let server = try await PresenceServer.start(configuration: configuration, store: store)
        let domain = TestDomain(directory: directory, store: store, server: server)
        do {
            try await body(domain, forwarded)
            await domain.stop()
        } catch {
            await domain.stop()
            throw error
        }
    }

    /// `body`'s result; past `limit` (a flow-control stall: nothing would wake it), the
    /// windows at the relay and at both nodes are recorded, and it fails.
    static func orStall<T: Sendable>(_ what: String, within limit: Duration = TestTime.scaled(.seconds(60)), domain: TestDomain, nodes: [Q2QNode],
                                     _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await withTimeout(limit, what, body)
        } catch let timeout as Q2QTimeoutError {
            Issue.record(Comment(rawValue: "\(timeout); flow-control state:\n" + (await flowState(domain: domain, nodes: nodes))))
            throw timeout
        }
    }

    /// The windows at the relay and at each node, one line per channel end.
    static func flowState(domain: TestDomain, nodes: [Q2QNode]) async -> String {
        var state = ["relay:"] + domain.server.relay.windowsDescription
        for node in nodes {
            let flows = await node.relayedChannelFlows()
            state += ["node:"] + flows
        }
        return state.joined(separator: "\n")
    }

    @Test("relay: byte-exact, and the server forwards only TLS records, never the plaintext")
    func relayCarriesCiphertext() async throws {
        try await Self.withObservedDomain { domain, forwarded in
            try await withEchoingBob(in: domain) { aliceNode, _ in
                let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "echo", methods: .relay)
                #expect(stream.method == .virtual && stream.peer == Self.bob)
                let marker = Array("THE-PLAINTEXT-MARKER-".utf8)
                var payload: [UInt8] = []
                while payload.count < 1_000_000 { payload += marker + Array(String(payload.count).utf8) }
                #expect(try await roundTrip(stream, payload) == payload)

                let seen = forwarded.withLockedValue { $0.bytes }
                #expect(seen.count > 2 * payload.count)             // both directions went through the relay
                #expect(seen.first == 0x16)                          // a TLS handshake record opens the stream
                #expect(!seen.contains(subsequence: marker))
            }
        }
    }

    @Test("heavy traffic both ways at once through the relay does not deadlock")
    func bothWaysAtOnce() async throws {
        try await withDomain { domain in
            try await withEchoingBob(in: domain) { aliceNode, _ in
                let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "echo", methods: .relay)
                // Both links carry a full stream each way: their sockets fill in both
                // directions, which once made both ends stop reading.
                let block = (0..<65_521).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                let payload = Array((0..<256).map { _ in block }.joined())
                let echoed = try await withTimeout(TestTime.scaled(.seconds(60)), "a 16 MiB echo through the relay") { try await roundTrip(stream, payload) }
                #expect(echoed == payload)
            }
        }
    }

    @Test("auto: a listener whose tcp port cannot be reached (and no UDP) is reached by the relay")
    func relayWhenTCPBlocked() async throws {
        try await withDomain { domain in
            // bob publishes 127.0.0.2, where nothing listens: as if a firewall refused it;
            // and offers no PTCP paths, as if UDP were blocked.
            let unreachable = Q2QNodeConfiguration(listenHost: "127.0.0.1", publishedHosts: ["127.0.0.2"], udpEnabled: false)
            try await withEchoingBob(in: domain, bob: unreachable) { aliceNode, _ in
                let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "echo")
                #expect(stream.method == .virtual)
                #expect(try await roundTrip(stream, Array("through the relay".utf8)) == Array("through the relay".utf8))
            }
        }
    }

    @Test("racing: the loser is closed, and no relayed channel is left behind")
    func loserReleased() async throws {
        try await withDomain { domain in
            let both = Q2QNodeConfiguration(listenHost: "127.0.0.1", stagger: .zero)
            try await withEchoingBob(in: domain, alice: both, bob: both) { aliceNode, _ in
                for round in 0..<5 {
                    let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "echo")
                    let text = Array("round \(round)".utf8)
                    #expect(try await roundTrip(stream, text) == text)
                }
                // Every stream is closed; losers were closed when their race ended. A loser's
                // TLS close may wait up to its 5 s shutdown timeout for the peer's close_notify
                // (a busy machine stretches that): what is tested is that none is left behind.
                let deadline = ContinuousClock.now + .seconds(15)
                while domain.server.relayedChannelCount > 0, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(domain.server.relayedChannelCount == 0)
            }
        }
    }

    @Test("a receiver that does not read holds the sender to its window through the relay; nothing is lost")
    func slowReceiverHoldsSender() async throws {
        try await Self.withObservedDomain { domain, forwarded in
            let aliceNode = try await makeNode("alice@example.test", in: domain)
            let window = 256 * 1024
            let bobNode = try await makeNode("bob@example.test", in: domain,
                                             configuration: .init(listenHost: "127.0.0.1", relayWindow: window))
            let listener = try await bobNode.listen(as: Self.bob, service: "sink")
            let total = 64 * 1024 * 1024
            let startReading = NIOLockedValueBox(false)
            let received = Task { () -> Int in
                var iterator = listener.connections.makeAsyncIterator()
                guard let stream = await iterator.next() else { return -1 }
                while !startReading.withLockedValue({ $0 }) { try? await Task.sleep(for: .milliseconds(20)) }
                return (try? await stream.channel.executeThenClose { inbound, _ in
                    var count = 0
                    for try await buffer in inbound {
                        count += buffer.readableBytes
                        if count >= total { break }
                    }
                    return count
                }) ?? -2
            }
            let nodes = [aliceNode, bobNode]
            let stream = try await Self.orStall("connecting", domain: domain, nodes: nodes) {
                try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "sink", methods: .relay)
            }
            let sender = Task {
                try await stream.channel.executeThenClose { _, outbound in
                    let chunk = ByteBuffer(repeating: 0x5A, count: 64 * 1024)
                    for _ in 0..<(total / chunk.readableBytes) { try await outbound.write(chunk) }
                }
            }
            // While bob reads nothing, what crosses the relay is his window, plus what his
            // pipeline took before it stopped asking (the TLS handshake, a few records
            // buffered for the application), not the 64 MiB alice offers.
            try await Task.sleep(for: .seconds(2))
            let crossedBeforeReading = forwarded.withLockedValue { $0.count }
            if crossedBeforeReading > 4 * window {
                // Seen rarely under load, not understood yet: where the credit went.
                Issue.record(Comment(rawValue: "\(crossedBeforeReading) bytes relayed to a receiver that reads nothing; "
                                     + "flow-control state:\n" + (await Self.flowState(domain: domain, nodes: nodes))))
            }
            startReading.withLockedValue { $0 = true }
            #expect(try await Self.orStall("bob reading 64 MiB", domain: domain, nodes: nodes) { await received.value } == total)
            try await Self.orStall("alice sending 64 MiB", domain: domain, nodes: nodes) { try await sender.value }
            await listener.close()
            await aliceNode.shutdown()
            await bobNode.shutdown()
        }
    }

    @Test("a node that sends beyond its credit has the relayed channel closed, and no more is forwarded")
    func overrunClosesChannel() async throws {
        try await Self.withObservedDomain { domain, forwarded in
            let aliceNode = try await makeNode("alice@example.test", in: domain)
            let window = 256 * 1024
            let bobNode = try await makeNode("bob@example.test", in: domain,
                                             configuration: .init(listenHost: "127.0.0.1", relayWindow: window))
            let listener = try await bobNode.listen(as: Self.bob, service: "sink")
            let bobHasStream = NIOLockedValueBox(false)
            let bobSaw = Task { () -> Bool in
                var iterator = listener.connections.makeAsyncIterator()
                guard let stream = await iterator.next() else { return false }
                bobHasStream.withLockedValue { $0 = true }
                // bob does not read until the channel is closed under him.
                try? await stream.channel.channel.closeFuture.get()
                return true
            }
            let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "sink", methods: .relay)
            // The claim is pipelined: bob has his side only once he has accepted it.
            let accepting = ContinuousClock.now + TestTime.scaled(.seconds(10))
            while !bobHasStream.withLockedValue({ $0 }), ContinuousClock.now < accepting {
                try await Task.sleep(for: .milliseconds(10))
            }
            try #require(bobHasStream.withLockedValue { $0 })
            let before = forwarded.withLockedValue { $0.count }
            // Beside alice's well-behaved channel (id 1 on her connection to the server),
            // raw `write`s on it that ignore the credit bob granted.
            let identity = try await aliceNode.identity(Self.alice)
            let link = try await aliceNode.link(as: identity, to: "example.test")
            let block = AMPBytes(ByteBuffer(repeating: 0xEE, count: 65_535))
            for _ in 0..<64 { try link.sendWithoutWaiting(Write.self, .init(id: 1, body: block)) }
            #expect(try await withTimeout(TestTime.scaled(.seconds(10)), "bob's channel closing") { await bobSaw.value })
            let deadline = ContinuousClock.now + TestTime.scaled(.seconds(5))
            while domain.server.relayedChannelCount > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(domain.server.relayedChannelCount == 0)
            let overrun = forwarded.withLockedValue { $0.count } - before
            #expect(overrun <= window, "\(overrun) bytes forwarded beyond the window")
            try? await stream.channel.channel.close()
            await listener.close()
            await aliceNode.shutdown()
            await bobNode.shutdown()
        }
    }
}

import AMP
import Crypto
import Foundation
import NIOCore
@testable import Q2Q
import Testing
import VertexTestSupport

/// The review's medium findings at the presence server (M1, M3, M4) and at the nodes'
/// links to it (M2's relay offers, M6).
extension SecurityTests {
    static let alice = try! Q2QAddress("alice@example.test")
    static let carol = try! Q2QAddress("carol@example.test")

    /// `address`'s secured presence connection to `domain`, from its node.
    static func link(_ node: Q2QNode, as address: Q2QAddress, to domain: String = "example.test") async throws -> AMPConnection {
        try await node.link(as: try await node.identity(address), to: domain)
    }

    @Test("M1: listen only for the server's own users and a few services per connection; expired registrations are purged unasked")
    func listenLimits() async throws {
        let a = try await TestDomain.start(domain: "a.test")
        // Long enough that a loaded machine still sees the registration before it lapses.
        let b = try await TestDomain.start(domain: "b.test", peerServers: ["a.test": a.hostPort]) { $0.listenLifetime = 4 }
        let alice = try Q2QAddress("alice@a.test")
        let bob = try Q2QAddress("bob@b.test")
        let aliceNode = try await makeNode(alice.description, in: a, knowing: [b])
        let bobNode = try await makeNode(bob.description, in: b)
        // alice proves her a.test address at b.test (which pins a.test's CA), but b.test
        // is not her presence server.
        let foreign = await #expect(throws: PresenceError.self) {
            try await Self.link(aliceNode, as: alice, to: "b.test").call(Listen.self, .init(from: alice, protocols: ["echo"], description: ""))
        }
        #expect(foreign?.code == "NotAllowed")
        let bobLink = try await Self.link(bobNode, as: bob, to: "b.test")
        let many = await #expect(throws: PresenceError.self) {
            try await bobLink.call(Listen.self, .init(from: bob, protocols: (0..<17).map { "s\($0)" }, description: ""))
        }
        #expect(many?.errorDescription.contains("1 to 16 service names") == true)
        _ = try await bobLink.call(Listen.self, .init(from: bob, protocols: ["echo"], description: ""))
        #expect(b.server.listeners.storedCount == 1)
        // Nobody asks for bob/echo, and its connection stays open: the purge drops it.
        let deadline = ContinuousClock.now + .seconds(20)
        while b.server.listeners.storedCount > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(b.server.listeners.storedCount == 0)
        await aliceNode.shutdown()
        await bobNode.shutdown()
        await b.stop()
        await a.stop()
    }

    @Test("M2: a relay offer opens one channel, for the caller it was made to; M3: a caller's live offers are capped")
    func relayOffersAreSingleUseAndBound() async throws {
        try await withDomain(configure: { $0.relayLimits.offersPerCaller = 3 }) { domain in
            let aliceNode = try await makeNode(Self.alice.description, in: domain)
            let carolNode = try await makeNode(Self.carol.description, in: domain)
            let bobNode = try await makeNode(Self.bob.description, in: domain)
            let listener = try await bobNode.listen(as: Self.bob, service: "echo")
            let carolLink = try await Self.link(carolNode, as: Self.carol)
            let aliceLink = try await Self.link(aliceNode, as: Self.alice)
            let offer = try #require(try await carolLink.call(Inbound.self, .init(from: Self.carol, to: Self.bob, service: "echo")).listeners.first)
            // alice learnt carol's listener id: it is not hers to use.
            let stolen = await #expect(throws: ConnectionError.self) {
                try await aliceLink.call(Virtual.self, .init(id: 1, listener: offer.identifier, window: 65536))
            }
            #expect(stolen?.errorDescription.contains("offered to you") == true)
            _ = try await carolLink.call(Virtual.self, .init(id: 1, listener: offer.identifier, window: 65536))
            let again = await #expect(throws: ConnectionError.self) {
                try await carolLink.call(Virtual.self, .init(id: 2, listener: offer.identifier, window: 65536))
            }
            #expect(again?.errorDescription.contains("used") == true)
            // carol holds one unused offer... no: the used one is gone. Three more fill her share.
            for _ in 0..<3 { _ = try await carolLink.call(Inbound.self, .init(from: Self.carol, to: Self.bob, service: "echo")) }
            let capped = await #expect(throws: ConnectionError.self) {
                try await carolLink.call(Inbound.self, .init(from: Self.carol, to: Self.bob, service: "echo"))
            }
            #expect(capped?.errorDescription.contains("too many connection attempts") == true)
            // Others are not held back by carol's share.
            _ = try await aliceLink.call(Inbound.self, .init(from: Self.alice, to: Self.bob, service: "echo"))
            await listener.close()
            for node in [aliceNode, carolNode, bobNode] { await node.shutdown() }
        }
    }

    @Test("H3: relayed channels reserve their windows from the relay's budget; one that does not fit is refused, clearly, and counted")
    func relayBudget() async throws {
        try await withDomain(configure: { $0.relayLimits.budget = 16 << 20 }) { domain in
            let carolNode = try await makeNode(Self.carol.description, in: domain)
            let bobNode = try await makeNode(Self.bob.description, in: domain)
            let listener = try await bobNode.listen(as: Self.bob, service: "echo")
            let carolLink = try await Self.link(carolNode, as: Self.carol)
            func offer() async throws -> String {
                try #require(try await carolLink.call(Inbound.self, .init(from: Self.carol, to: Self.bob, service: "echo")).listeners.first).identifier
            }
            let window = 4 << 20
            _ = try await carolLink.call(Virtual.self, .init(id: 1, listener: try await offer(), window: window))
            // bob's window (4 MiB) and carol's: 8 MiB of the 16.
            #expect(domain.server.relayReservedBytes == 2 * window)
            let refused = await #expect(throws: ConnectionError.self) {
                try await carolLink.call(Virtual.self, .init(id: 2, listener: try await offer(), window: window))
            }
            #expect(refused?.errorDescription.contains("memory budget") == true)
            #expect(domain.server.relayStatistics.budgetRefusals == 1)
            // Closing the first gives its windows back.
            try carolLink.sendWithoutWaiting(Close.self, .init(id: 1))
            let deadline = ContinuousClock.now + .seconds(5)
            while domain.server.relayReservedBytes > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            #expect(domain.server.relayReservedBytes == 0)
            _ = try await carolLink.call(Virtual.self, .init(id: 3, listener: try await offer(), window: window))
            await listener.close()
            await carolNode.shutdown()
            await bobNode.shutdown()
        }
    }

    @Test("H3: a channel with both ends on one connection (a node relayed to itself) gives its reservation back once when that connection closes")
    func relayToSelfAccounting() async throws {
        try await withDomain { domain in
            let aliceNode = try await makeNode(Self.alice.description, in: domain)
            let listener = try await aliceNode.listen(as: Self.alice, service: "echo")
            let stream = try await aliceNode.connect(from: Self.alice, to: Self.alice, service: "echo", methods: .relay)
            #expect(domain.server.relayedChannelCount == 1)
            #expect(domain.server.relayReservedBytes > 0)
            // The stream stays open: it is the connection's close that ends the channel.
            await listener.close()
            await aliceNode.shutdown()   // closes the one presence connection both ends are on
            _ = stream
            let deadline = ContinuousClock.now + .seconds(5)
            while domain.server.relayedChannelCount > 0 || domain.server.relayReservedBytes != 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(domain.server.relayedChannelCount == 0)
            #expect(domain.server.relayReservedBytes == 0)
        }
    }

    @Test("M2: a relayed channel or a direct connection that never completes TLS and its claim is closed by the listener")
    func silentPathsAreClosed() async throws {
        try await withDomain { domain in
            let carolNode = try await makeNode(Self.carol.description, in: domain)
            var configuration = Q2QNodeConfiguration(listenHost: "127.0.0.1")
            configuration.pathClaimTimeout = .seconds(1)
            let bobNode = try await makeNode(Self.bob.description, in: domain, configuration: configuration)
            let listener = try await bobNode.listen(as: Self.bob, service: "echo")
            let carolLink = try await Self.link(carolNode, as: Self.carol)
            let offer = try #require(try await carolLink.call(Inbound.self, .init(from: Self.carol, to: Self.bob, service: "echo")).listeners.first)
            _ = try await carolLink.call(Virtual.self, .init(id: 1, listener: offer.identifier, window: 65536))
            #expect(domain.server.relayedChannelCount == 1)
            // carol sends no ClientHello on it; bob's direct port gets a connection that says nothing.
            let port = try #require(listener.port)
            // Closed after 1 s; the window leaves room for a loaded machine (a TLS close
            // before any handshake may also wait for NIOSSL's shutdown timeout, 5 s).
            let (_, closed) = try await RawSocket.exchange(port: port, bytes: [], window: .seconds(20))
            #expect(closed, "the direct port kept a silent connection")
            let deadline = ContinuousClock.now + .seconds(10)
            while domain.server.relayedChannelCount > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(domain.server.relayedChannelCount == 0)
            await listener.close()
            await carolNode.shutdown()
            await bobNode.shutdown()
        }
    }

    @Test("M4: wrong passwords sent all at once are charged before hashing: no more tries than the burst")
    func concurrentSignsAreCharged() async throws {
        try await withDomain(users: ["alice@example.test": "s3cret"]) { domain in
            let client = try domain.client()
            try await client.store.setServer(domain.hostPort, for: "example.test")
            let results = try await client.withNewConnection(to: domain.hostPort, responders: AMPResponders()) { connection in
                let authority = try await client.identify("example.test", on: connection)
                try await client.secure(connection, domain: "example.test", authority: authority, as: nil)
            }.callConcurrently(count: 30) { connection in
                let request = try Q2QCertificateRequest(address: Self.alice, key: P256.Signing.PrivateKey())
                _ = try await connection.call(Sign.self, .init(certificateRequest: request, password: Array("wrong".utf8)))
            }
            let hashed = results.filter { ($0 as? PresenceError)?.code == "NoSuchUser" }.count
            let limited = results.filter { ($0 as? PresenceError)?.code == "RateLimited" }.count
            #expect(hashed + limited == 30, "\(results)")
            #expect(hashed <= 10, "\(hashed) passwords checked at once from one address")
        }
    }

    @Test("L10: a connection that does not authenticate in time is closed (a half-sent box included); authenticated ones stay")
    func unauthenticatedConnectionsExpire() async throws {
        // Long enough for bob's own registration and link on a loaded machine (each an
        // unauthenticated connection until its handshake), short for a test.
        try await withDomain(configure: { $0.unauthenticatedLifetime = TestTime.scaled(.seconds(8)) }) { domain in
            let bobNode = try await makeNode(Self.bob.description, in: domain)
            let listener = try await bobNode.listen(as: Self.bob, service: "echo")
            let link = try await Self.link(bobNode, as: Self.bob)
            let half: [UInt8] = [0, 8] + Array("_command".utf8) + [0, 40]   // a key, then a value that never comes
            let (_, closed) = try await RawSocket.exchange(port: domain.port, bytes: half, window: TestTime.scaled(.seconds(30)))
            #expect(closed, "the server kept a connection that never authenticated")
            try await Task.sleep(for: .seconds(2))
            // bob's presence connection authenticated: still there, still listening.
            #expect(domain.server.listenerCount == 1)
            #expect(link.channel.isActive)
            await listener.close()
            await bobNode.shutdown()
        }
    }

    @Test("M6: a node answers inbound, virtual and bind-udp only on its own domain's link, not on a link to a peer's domain")
    func foreignLinkCarriesNoListeners() async throws {
        let a = try await TestDomain.start(domain: "a.test")
        let b = try await TestDomain.start(domain: "b.test", peerServers: ["a.test": a.hostPort])
        let alice = try Q2QAddress("alice@a.test")
        let bob = try Q2QAddress("bob@b.test")
        let aliceNode = try await makeNode(alice.description, in: a, knowing: [b])
        let carolNode = try await makeNode("carol@a.test", in: a)
        let listener = try await aliceNode.listen(as: alice, service: "echo")
        // alice's node opens a link to b.test (as when she connects to bob), and b.test's
        // server, were it malicious, sends her listener commands over it.
        let link = try await Self.link(aliceNode, as: alice, to: "b.test")
        let serverSide = try #require(b.server.connections.withLock { connections in
            connections.values.first { $0.remoteAddress == link.localAddress }
        })
        let inbound = await #expect(throws: ConnectionError.self) {
            try await serverSide.call(Inbound.self, .init(from: bob, to: alice, service: "echo", udpSource: HostPort(host: "127.0.0.1", port: 9)))
        }
        #expect(inbound?.errorDescription.contains("carries no listeners") == true)
        await #expect(throws: ConnectionError.self) {
            try await serverSide.call(Virtual.self, .init(id: -1, listener: "00", window: 65536))
        }
        await #expect(throws: ConnectionError.self) {
            try await serverSide.call(BindUDP.self, .init(service: "echo", listener: alice, caller: bob,
                                                          from: HostPort(host: "127.0.0.1", port: 9), to: HostPort(host: "127.0.0.1", port: 9)))
        }
        // Her own domain's link still answers.
        let stream = try await carolNode.connect(from: try Q2QAddress("carol@a.test"), to: alice, service: "echo", methods: .tcp)
        #expect(stream.peer == alice)
        await listener.close()
        await aliceNode.shutdown()
        await carolNode.shutdown()
        await b.stop()
        await a.stop()
    }
}

extension AMPConnection {
    /// Runs `body` `count` times at once on this connection; the error of each (nil: none).
    func callConcurrently(count: Int, _ body: @escaping @Sendable (AMPConnection) async throws -> Void) async -> [(any Error)?] {
        await withTaskGroup(of: (any Error)?.self) { group in
            for _ in 0..<count {
                group.addTask {
                    do {
                        try await body(self)
                        return nil
                    } catch {
                        return error
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
    }
}

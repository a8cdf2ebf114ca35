import AMP
import Foundation
import NIOConcurrencyHelpers
import NIOCore
@testable import Q2Q
import Testing

/// IPv6 without a network that has it: which addresses a node offers, the proofs that
/// let a caller's IPv6 address through its presence server, dual-stack binding, and
/// Happy Eyeballs' head start. Paths over IPv6 between sites are in NetlabTests+IPv6.
@Suite("IPv6: offered addresses, address proofs, dual-stack servers, Happy Eyeballs")
struct IPv6Tests {
    static let alice = try! Q2QAddress("alice@example.test")
    static let bob = try! Q2QAddress("bob@example.test")

    private static func address(_ text: String) -> in6_addr {
        var address = in6_addr()
        precondition(inet_pton(AF_INET6, text, &address) == 1)
        return address
    }

    @Test("only global unicast IPv6 addresses are offered; unique local ones when asked; never link-local, loopback, multicast or mapped")
    func reachableAddresses() {
        for global in ["2001:db8:a:1::10", "2a00:1450::1", "3fff::1"] {
            #expect(LocalAddresses.isReachable(Self.address(global), includingUniqueLocal: false), "\(global)")
        }
        for never in ["fe80::1", "::1", "ff02::1", "::ffff:192.0.2.1", "::", "4000::1"] {
            #expect(!LocalAddresses.isReachable(Self.address(never), includingUniqueLocal: true), "\(never)")
        }
        #expect(!LocalAddresses.isReachable(Self.address("fd12:3456::1"), includingUniqueLocal: false))
        #expect(LocalAddresses.isReachable(Self.address("fd12:3456::1"), includingUniqueLocal: true))
    }

    @Test("on-link addresses (loopback, our own subnets) get kernel TCP's head start; documentation addresses elsewhere do not")
    func onLink() throws {
        let links = [(address: try SocketAddress(ipAddress: "10.0.1.10", port: 0), netmask: try SocketAddress(ipAddress: "255.255.255.0", port: 0)),
                     (address: try SocketAddress(ipAddress: "2001:db8:a:1::10", port: 0), netmask: try SocketAddress(ipAddress: "ffff:ffff:ffff:ffff::", port: 0))]
        for near in ["127.0.0.1", "::1", "10.0.1.77", "2001:db8:a:1::77"] {
            #expect(LocalAddresses.isOnLink(near, links: links), "\(near)")
        }
        for far in ["10.0.2.10", "192.0.2.77", "2001:db8:b:1::10", "example.test"] {
            #expect(!LocalAddresses.isOnLink(far, links: links), "\(far)")
        }
        // This host's own addresses are on its links.
        for own in LocalAddresses.ipv4() { #expect(LocalAddresses.isOnLink(own), "\(own)") }
    }

    @Test("an address proof holds for its address for its lifetime, and for no other address, key, time or length")
    func addressProofs() {
        let proofs = AddressProofs()
        let address = HostPort(host: "2001:db8:a:1::10", port: 40000)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let proof = proofs.proof(for: address, now: now)
        #expect(proof.count == AddressProofs.size)
        #expect(proofs.verifies(proof, for: address, now: now))
        #expect(proofs.verifies(proof, for: address, now: now + 60 * Double(AddressProofs.lifetime - 1)))
        #expect(!proofs.verifies(proof, for: address, now: now + 60 * Double(AddressProofs.lifetime) + 1))
        #expect(!proofs.verifies(proof, for: address, now: now - 61), "not before it was made")
        #expect(!proofs.verifies(proof, for: HostPort(host: "2001:db8:a:1::11", port: 40000), now: now))
        #expect(!proofs.verifies(proof, for: HostPort(host: "2001:db8:a:1::10", port: 40001), now: now))
        #expect(!AddressProofs().verifies(proof, for: address, now: now), "another server's key")
        #expect(!proofs.verifies(Array(proof.dropLast()), for: address, now: now))
        var flipped = proof
        flipped[7] ^= 1
        #expect(!proofs.verifies(flipped, for: address, now: now))
    }

    @Test("inbound passes a caller's UDP addresses on only when they are its connection's source or carry the server's proof")
    func udpSourcesNeedProof() async throws {
        try await withDomain { domain in
            let aliceNode = try await makeNode("alice@example.test", in: domain)
            // bob's listening connection records what the server forwards.
            let bobNode = try await makeNode("bob@example.test", in: domain)
            let forwarded = NIOLockedValueBox<[Inbound.Arguments]>([])
            let bobIdentity = try await bobNode.identity(Self.bob)
            var responders = AMPResponders()
            responders.register(Inbound.self) { arguments, _ in
                forwarded.withLockedValue { $0.append(arguments) }
                return Inbound.Response(listeners: [ListenerOffer(id: UUID().uuidString, methods: [], expires: AmpTime(Date() + 60), description: "")])
            }
            let client = PresenceClient(store: bobNode.store)
            let bob = try await client.withNewConnection(to: domain.hostPort, responders: responders) { connection in
                let authority = try await client.identify("example.test", on: connection)
                try await client.secure(connection, domain: "example.test", authority: authority, as: bobIdentity)
            }
            _ = try await bob.call(Listen.self, .init(from: Self.bob, protocols: ["echo"], description: ""))

            let link = try await aliceNode.link(as: try await aliceNode.identity(Self.alice), to: "example.test")
            let v6 = HostPort(host: "2001:db8:a:1::10", port: 40000)
            let v4Elsewhere = HostPort(host: "203.0.113.10", port: 40000)
            let proofs = domain.server.addressProofs
            func inbound(_ sources: [DiscoveredAddress]) async throws -> Inbound.Arguments {
                _ = try await link.call(Inbound.self, .init(from: Self.alice, to: Self.bob, service: "echo", udpSources: sources))
                return try #require(forwarded.withLockedValue { $0.last })
            }
            // Without proofs: only the address alice's connection comes from.
            var seen = try await inbound([DiscoveredAddress(address: v6), DiscoveredAddress(address: v4Elsewhere)])
            #expect(seen.udpSource6 == nil)
            #expect(seen.udpSource == nil)
            seen = try await inbound([DiscoveredAddress(address: HostPort(host: "127.0.0.1", port: 5))])
            #expect(seen.udpSource == HostPort(host: "127.0.0.1", port: 5))
            // With a proof made for another address, or a forged one: dropped.
            seen = try await inbound([DiscoveredAddress(address: v6, proof: proofs.proof(for: HostPort(host: "2001:db8:a:1::11", port: 40000))),
                                      DiscoveredAddress(address: v4Elsewhere, proof: [UInt8](repeating: 7, count: AddressProofs.size))])
            #expect(seen.udpSource6 == nil)
            #expect(seen.udpSource == nil)
            // With the server's proofs: both passed on, and the proofs themselves are not.
            seen = try await inbound([DiscoveredAddress(address: v6, proof: proofs.proof(for: v6)),
                                      DiscoveredAddress(address: v4Elsewhere, proof: proofs.proof(for: v4Elsewhere))])
            #expect(seen.udpSource6 == v6)
            #expect(seen.udpSource == v4Elsewhere)
            #expect(seen.udpProof == nil && seen.udpProof6 == nil)
            await bob.close()
            await aliceNode.shutdown()
            await bobNode.shutdown()
        }
    }

    @Test("a presence server on its default addresses listens on IPv4 and IPv6 on one port, and answers discovery on both")
    func dualStackServer() async throws {
        try await withDomain(configure: { $0.hosts = ["127.0.0.1", "::1"] }) { domain in
            let addresses = domain.server.localAddresses
            #expect(addresses.compactMap(\.ipAddress) == ["127.0.0.1", "::1"])
            #expect(Set(addresses.compactMap(\.port)).count == 1, "one port for both families: \(addresses)")
            let port = try #require(addresses.first?.port)
            // Who-Am-I over each family, in the usual forms.
            let seen6 = try await PresenceClient.whoAmI(server: HostPort(host: "::1", port: port))
            #expect(seen6.host == "::1" && seen6.description.hasPrefix("[::1]:"))
            let seen4 = try await PresenceClient.whoAmI(server: HostPort(host: "127.0.0.1", port: port))
            #expect(seen4.host == "127.0.0.1")
            // Discovery over IPv6, with a proof.
            let udp6 = try await UDPPort.bind(host: "::1", group: .singletonMultiThreadedEventLoopGroup)
            let found = await udp6.discoverMapping(via: try SocketAddress(ipAddress: "::1", port: port))
            #expect(found?.address == HostPort(host: "::1", port: udp6.localPort))
            #expect(found?.proof.map { domain.server.addressProofs.verifies($0, for: HostPort(host: "::1", port: udp6.localPort)) } == true)
            await udp6.close()
        }
    }

    // Not timing tests: the waits that must not happen are long (an hour, a minute), the
    // ones that must are short, and the time limit tells the two apart on a loaded machine.
    @Test("discovery answers: the first family's is awaited, another only briefly after it, so a silent IPv6 path does not hold IPv4 back",
          .timeLimit(.minutes(1)))
    func discoveryAnswers() async throws {
        let v4 = DiscoveredAddress(address: HostPort(host: "203.0.113.10", port: 40000), proof: nil)
        let v6 = DiscoveredAddress(address: HostPort(host: "2001:db8:a:1::10", port: 40001), proof: nil)
        func answering(_ answer: DiscoveredAddress?, after delay: Duration) -> Task<DiscoveredAddress?, Never> {
            Task { try? await Task.sleep(for: delay); return answer }
        }
        #expect(await Q2QNode.answers(of: [answering(v4, after: .zero), answering(v6, after: .milliseconds(5))],
                                      patience: .seconds(30), grace: .seconds(30)) == [v4, v6])
        // IPv6 silent for an hour: given up after the grace, not waited for until the
        // (long) patience runs out.
        let clock = ContinuousClock()
        let start = clock.now
        #expect(await Q2QNode.answers(of: [answering(v4, after: .zero), answering(v6, after: .seconds(3600))],
                                      patience: .seconds(120), grace: .milliseconds(100)) == [v4])
        #expect(clock.now - start < .seconds(60))
        // IPv4 failing (UDP blocked over IPv4): the IPv6 answer still counts.
        #expect(await Q2QNode.answers(of: [answering(nil, after: .zero), answering(v6, after: .milliseconds(5))], patience: .seconds(30)) == [v6])
    }

    @Test("Happy Eyeballs: an attempt's delay holds it behind the others of its wave, and a failed IPv6 attempt delays IPv4 by its delay, not a wave",
          .timeLimit(.minutes(1)))
    func headStart() async throws {
        let racer = MethodRacer<String>(stagger: .seconds(3600)) { _ in }
        let started = NIOLockedValueBox<[String]>([])
        // Both work: IPv6 wins, and IPv4, held back by its delay, never starts.
        let (winner, _) = try await racer.race([
            .init(label: "v4", delay: .seconds(3600)) { started.withLockedValue { $0.append("v4") }; return "v4" },
            .init(label: "v6") { started.withLockedValue { $0.append("v6") }; return "v6" },
        ])
        #expect(winner == "v6")
        #expect(started.withLockedValue { $0 } == ["v6"])
        // IPv6 broken (fails at once): IPv4 starts after its delay, in the same wave (the
        // next would start only after the hour-long stagger).
        let (fallback, _) = try await racer.race([
            .init(label: "v4", delay: .milliseconds(100)) { "v4" },
            .init(label: "v6") { throw Q2QNodeError("unreachable") },
            .init(label: "next wave", wave: 1) { "next wave" },
        ])
        #expect(fallback == "v4")
    }
}

import AMP
import Foundation
import NIOCore
import NIOPosix
@testable import Q2Q
import Testing

/// The review's findings at the nodes: whom a listener trusts to name a CA (M10), what
/// a node dials (L3), what names an account may have (L7).
extension SecurityTests {
    @Test("M10: a stranger's handshake naming a domain makes the listener fetch nothing; callers' CAs come from the listener's own server")
    func listenersLearnCAsFromTheirServer() async throws {
        let evil = try await TestDomain.start(domain: "evil.test")
        let b = try await TestDomain.start(domain: "b.test", peerServers: ["evil.test": evil.hostPort])
        let mallory = try Q2QAddress("mallory@evil.test")
        let bob = try Q2QAddress("bob@b.test")
        let malloryNode = try await makeNode(mallory.description, in: evil, knowing: [b])
        // bob's home knows where evil.test's server is: before the fix, his listener
        // fetched (and pinned) evil.test's CA from it as soon as a handshake named it.
        let bobNode = try await makeNode(bob.description, in: b, knowing: [evil])
        let listener = try await bobNode.listen(as: bob, service: "echo")
        let port = try #require(listener.port)
        let bobAuthority = try #require(b.server.authority(for: "b.test")).certificate
        let identity = try await malloryNode.identity(mallory)
        // In TLS 1.3 the dialling side is done before the listener has checked its
        // certificate: the refusal is the stream's end.
        if let stranger = try? await DirectPaths.dial(HostPort(host: "127.0.0.1", port: port), as: identity, peer: bob, authority: bobAuthority,
                                                      listener: { ListenerClaim("00", adoption: .bytes) }, service: "echo",
                                                      group: MultiThreadedEventLoopGroup.singleton, logger: bobNode.logger) {
            let ended = try? await withTimeout(.seconds(10), "the refused path ending") {
                try? await stranger.stream.channel.executeThenClose { inbound, _ in for try await _ in inbound {} }
                return true
            }
            #expect(ended == true)
        }
        #expect(try await bobNode.store.pinnedAuthority(for: "evil.test") == nil)
        // Through b.test's server, which verified mallory, bob learns evil.test's CA and
        // the connection works.
        let stream = try await malloryNode.connect(from: mallory, to: bob, service: "echo", methods: .tcp)
        #expect(stream.peer == bob)
        #expect(try await bobNode.store.pinnedAuthority(for: "evil.test") == evil.server.authority(for: "evil.test")?.certificate)
        try? await stream.channel.channel.close()
        await listener.close()
        await malloryNode.shutdown()
        await bobNode.shutdown()
        await b.stop()
        await evil.stop()
    }

    @Test("M10: no CA is fetched for an IP-address domain unless its server was named; a failed fetch is remembered")
    func noFetchForAddresses() async throws {
        let fetcher = AuthorityFetcher()
        let nobody = HostPort(host: "127.0.0.1", port: 9)   // loopback's discard port: nothing listens
        let address = await #expect(throws: PresenceClientError.self) {
            _ = try await fetcher.fetch("10.0.0.5", from: HostPort(host: "10.0.0.5", port: 8788), explicit: false,
                                        group: MultiThreadedEventLoopGroup.singleton, logger: .init(label: "test"))
        }
        #expect(address?.description.contains("is an IP address") == true)
        await #expect(throws: (any Error).self) {
            _ = try await fetcher.fetch("nowhere.test", from: nobody, explicit: true, group: MultiThreadedEventLoopGroup.singleton, logger: .init(label: "test"))
        }
        let remembered = await #expect(throws: PresenceClientError.self) {
            _ = try await fetcher.fetch("nowhere.test", from: nobody, explicit: true, group: MultiThreadedEventLoopGroup.singleton, logger: .init(label: "test"))
        }
        #expect(remembered?.description.contains("not asking again yet") == true)
    }

    @Test("L3: a tcp@ path that names a host rather than an address is not dialled (nothing is resolved)")
    func namedPathsAreNotDialled() async throws {
        try await withDomain { domain in
            let aliceNode = try await makeNode(Self.alice.description, in: domain)
            let identity = try await aliceNode.identity(Self.alice)
            let authority = try #require(domain.server.authority(for: "example.test")).certificate
            let error = await #expect(throws: Q2QNodeError.self) {
                _ = try await DirectPaths.dial(HostPort(host: "localhost", port: domain.port), as: identity, peer: Self.bob, authority: authority,
                                               listener: { ListenerClaim("00", adoption: .bytes) }, service: "echo",
                                               group: MultiThreadedEventLoopGroup.singleton, logger: aliceNode.logger)
            }
            #expect(error?.description.contains("names a host") == true)
            await aliceNode.shutdown()
        }
    }

    @Test("L7: an account whose address a certificate cannot hold is refused when it is made")
    func accountNamesAreASCII() async throws {
        #expect(DomainAuthority.problem(naming: try Q2QAddress("jos\u{E9}@example.test")) != nil)
        #expect(DomainAuthority.problem(naming: try Q2QAddress("jose@example.test")) == nil)
        try await withDomain(openRegistration: true) { domain in
            let client = try domain.client()
            let refused = await #expect(throws: PresenceClientError.self) {
                try await client.createAccount(try Q2QAddress("jos\u{E9}@example.test"), password: Array("pw".utf8), server: domain.hostPort)
            }
            #expect(refused?.description.contains("ASCII") == true)
        }
    }
}

import AMP
import Crypto
import Foundation
import NIOCore
import Q2Q
import Testing
import VertexTestSupport

/// A presence server on loopback with its own temporary data directory, and homes
/// for clients.
struct TestDomain {
    var name = "example.test"
    let directory: URL
    let store: SQLitePresenceStore
    let server: PresenceServer
    var port: Int { server.localAddress!.port! }
    var hostPort: HostPort { HostPort(host: "127.0.0.1", port: port) }

    static func start(domain: String = "example.test", users: [String: String] = [:],
                      openRegistration: Bool = false, registrationsPerHour: Int = 5,
                      peerServers: [String: HostPort] = [:],
                      configure: (inout PresenceServerConfiguration) -> Void = { _ in }) async throws -> TestDomain {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-presence-\(UUID().uuidString)")
        let store = try SQLitePresenceStore(directory: directory.appendingPathComponent("data"))
        for (address, password) in users {
            _ = try await store.addUser(try Q2QAddress(address), password: try PasswordHash(hashing: Array(password.utf8), logN: 10), now: Date())
        }
        var configuration = PresenceServerConfiguration(domains: [domain], host: "127.0.0.1", port: 0,
                                                        openRegistration: openRegistration, registrationsPerHour: registrationsPerHour)
        configuration.peerServers = peerServers
        configuration.stretchDeadlinesForTests()
        configure(&configuration)
        let server = try await PresenceServer.start(configuration: configuration, store: store)
        return TestDomain(name: domain, directory: directory, store: store, server: server)
    }

    func client() throws -> PresenceClient {
        PresenceClient(store: try SQLiteNodeStore(home: directory.appendingPathComponent("home-\(UUID().uuidString)")))
    }

    func stop() async {
        await server.close()
        try? FileManager.default.removeItem(at: directory)
    }
}

extension PresenceServerConfiguration {
    /// No test here is about a listener too slow to answer `inbound`; under a loaded full
    /// run (netlab setting up namespaces beside it) answers were seen taking more than the
    /// default 5 s. Under a sanitizer (``TestTime``) handshakes and boxes take longer to
    /// arrive than the deadlines of a server facing the internet allow.
    mutating func stretchDeadlinesForTests() {
        inboundTimeout = TestTime.scaled(.seconds(30))
        firstBoxTimeout = TestTime.scaled(firstBoxTimeout)
        partialBoxTimeout = TestTime.scaled(partialBoxTimeout)
        unauthenticatedLifetime = TestTime.scaled(unauthenticatedLifetime)
    }
}

func withDomain<T>(users: [String: String] = [:], openRegistration: Bool = false, registrationsPerHour: Int = 5,
                   configure: (inout PresenceServerConfiguration) -> Void = { _ in },
                   _ body: (TestDomain) async throws -> T) async throws -> T {
    let domain = try await TestDomain.start(users: users, openRegistration: openRegistration, registrationsPerHour: registrationsPerHour,
                                            configure: configure)
    do {
        let result = try await body(domain)
        await domain.stop()
        return result
    } catch {
        await domain.stop()
        throw error
    }
}

@Suite("Presence server")
struct PresenceServerTests {
    static let alice = try! Q2QAddress("alice@example.test")

    @Test("register: a certificate for the right password, stored with its key; a wrong one stores nothing")
    func register() async throws {
        try await withDomain(users: ["alice@example.test": "s3cret"]) { domain in
            let client = try domain.client()
            await #expect(throws: PresenceClientError.self) {
                try await client.register(Self.alice, password: Array("wrong".utf8), server: domain.hostPort)
            }
            #expect(try await client.store.identities().isEmpty)
            await #expect(throws: PresenceClientError.self) {
                try await client.register(try Q2QAddress("nobody@example.test"), password: Array("s3cret".utf8), server: domain.hostPort)
            }
            let identity = try await client.register(Self.alice, password: Array("s3cret".utf8), server: domain.hostPort)
            #expect(identity.certificate.address == Self.alice)
            #expect(try await client.store.identity(for: Self.alice)?.certificate == identity.certificate)
            let authority = try #require(domain.server.authority(for: "example.test"))
            #expect(try await client.store.pinnedAuthority(for: "example.test") == authority.certificate)
            #expect(try await domain.store.issuedCertificates(for: Self.alice).map(\.serial) == [identity.certificate.serial])
        }
    }

    @Test("identify answers for the server's own domains only")
    func identify() async throws {
        try await withDomain { domain in
            let connection = try await AMPConnection.connect(host: "127.0.0.1", port: domain.port)
            let answer = try await connection.call(Identify.self, .init(subject: try Q2QAddress("example.test")))
            #expect(answer.certificate == domain.server.authority(for: "example.test")!.certificate)
            await #expect(throws: PresenceError.unknownDomain("this server is not the presence server of 'elsewhere.test'")) {
                try await connection.call(Identify.self, .init(subject: try Q2QAddress("elsewhere.test")))
            }
            // The connection survives the refusal.
            _ = try await connection.call(WhoAmI.self, AMPEmpty())
            await connection.close()
        }
    }

    @Test("sign is refused on a connection that is not TLS-secured")
    func signInClear() async throws {
        try await withDomain(users: ["alice@example.test": "s3cret"]) { domain in
            let connection = try await AMPConnection.connect(host: "127.0.0.1", port: domain.port)
            let request = try Q2QCertificateRequest(address: Self.alice, key: P256.Signing.PrivateKey())
            let error = await #expect(throws: PresenceError.self) {
                try await connection.call(Sign.self, .init(certificateRequest: request, password: Array("s3cret".utf8)))
            }
            #expect(error?.code == "SecureRequired")
            await connection.close()
            #expect(try await domain.store.issuedCertificates(for: nil).isEmpty)
        }
    }

    @Test("Who-Am-I and source-ip reflect the caller's address")
    func reflection() async throws {
        try await withDomain { domain in
            let connection = try await AMPConnection.connect(host: "127.0.0.1", port: domain.port)
            let seen = try await connection.call(WhoAmI.self, AMPEmpty()).address
            #expect(seen == HostPort(connection.localAddress!))
            #expect(try await connection.call(SourceIP.self, AMPEmpty()).text == "127.0.0.1")
            #expect(try await PresenceClient.whoAmI(server: domain.hostPort) .host == "127.0.0.1")
            await connection.close()
        }
    }

    /// Secures a new connection as `identity` and makes one call over it.
    static func secureAndCall(_ domain: TestDomain, as identity: Q2QIdentity) async throws {
        let client = try domain.client()
        try await client.withConnection(to: domain.hostPort) { connection in
            let authority = try await client.identify("example.test", on: connection)
            try await client.secure(connection, domain: "example.test", authority: authority, as: identity)
            #expect(connection.isTLS)
            _ = try await connection.call(WhoAmI.self, AMPEmpty())
        }
    }

    @Test("secure with a valid certificate; refused when expired, revoked, from another CA, or for another name")
    func secureChecks() async throws {
        try await withDomain(users: ["alice@example.test": "s3cret"]) { domain in
            let registered = try await domain.client().register(Self.alice, password: Array("s3cret".utf8), server: domain.hostPort)
            try await Self.secureAndCall(domain, as: registered)

            let authority = try #require(domain.server.authority(for: "example.test"))
            func identity(for address: Q2QAddress, by issuer: DomainAuthority, validity: TimeInterval = 3600, now: Date = Date()) throws -> Q2QIdentity {
                let key = P256.Signing.PrivateKey()
                let certificate = try issuer.issue(for: try Q2QCertificateRequest(address: address, key: key), validity: validity, now: now)
                return Q2QIdentity(address: address, privateKey: key, certificate: certificate)
            }
            // Expired: issued 40 days ago for 30 days.
            let expired = try identity(for: Self.alice, by: authority, validity: 30 * 86_400, now: Date() - 40 * 86_400)
            await #expect(throws: PresenceClientError.self) { try await Self.secureAndCall(domain, as: expired) }
            // From another CA that also calls itself example.test.
            let impostor = try identity(for: Self.alice, by: try DomainAuthority.create(domain: "example.test"))
            await #expect(throws: PresenceClientError.self) { try await Self.secureAndCall(domain, as: impostor) }
            // A valid certificate of bob, claiming to be alice.
            let bob = try identity(for: try Q2QAddress("bob@example.test"), by: authority)
            let claimingAlice = Q2QIdentity(address: Self.alice, privateKey: bob.privateKey, certificate: bob.certificate)
            await #expect(throws: PresenceClientError.self) { try await Self.secureAndCall(domain, as: claimingAlice) }
            // Revoked by the operator.
            #expect(try await domain.store.revoke(serial: registered.certificate.serial))
            await #expect(throws: PresenceClientError.self) { try await Self.secureAndCall(domain, as: registered) }
            // The server still serves.
            _ = try await PresenceClient.whoAmI(server: domain.hostPort)
        }
    }

    @Test("a domain whose CA changed fails with both fingerprints; an expected fingerprint is checked")
    func pinChange() async throws {
        try await withDomain(users: ["alice@example.test": "s3cret"]) { first in
            try await withDomain(users: ["alice@example.test": "s3cret"]) { second in
                let client = try first.client()
                _ = try await client.register(Self.alice, password: Array("s3cret".utf8), server: first.hostPort)
                let error = await #expect(throws: Q2QPinError.self) {
                    try await client.register(Self.alice, password: Array("s3cret".utf8), server: second.hostPort)
                }
                let pinned = first.server.authority(for: "example.test")!.certificate.fingerprint
                let presented = second.server.authority(for: "example.test")!.certificate.fingerprint
                #expect(error?.description.contains(pinned) == true)
                #expect(error?.description.contains(presented) == true)

                // Out of band: a fresh home given the right fingerprint pins it; a wrong one fails.
                let fresh = try second.client()
                await #expect(throws: PresenceClientError.self) {
                    try await fresh.register(Self.alice, password: Array("s3cret".utf8), server: second.hostPort, fingerprint: pinned)
                }
                #expect(try await fresh.store.pinnedAuthority(for: "example.test") == nil)
                _ = try await fresh.register(Self.alice, password: Array("s3cret".utf8), server: second.hostPort,
                                             fingerprint: presented.lowercased())
            }
        }
    }

    @Test("the password never crosses the network in clear")
    func passwordEncrypted() async throws {
        let password = "correct-horse-battery-staple-\(UUID().uuidString)"
        try await withDomain(users: ["alice@example.test": password]) { domain in
            let relay = try await RecordingRelay(to: domain.port)
            let identity = try await domain.client().register(Self.alice, password: Array(password.utf8),
                                                               server: HostPort(host: "127.0.0.1", port: relay.port))
            await relay.close()
            let captured = relay.bytes
            #expect(identity.address == Self.alice)
            // The capture holds the clear part of the exchange (identify, secure)…
            #expect(captured.contains(subsequence: Array("identify".utf8)))
            #expect(captured.contains(subsequence: Array("secure".utf8)))
            // …and neither the password nor the sign command.
            #expect(!captured.contains(subsequence: Array(password.utf8)))
            #expect(!captured.contains(subsequence: Array("certificate_request".utf8)))
        }
    }

    @Test("open registration: off by default, over TLS only, rate-limited per source IP")
    func openRegistration() async throws {
        try await withDomain { domain in
            let error = await #expect(throws: PresenceClientError.self) {
                try await domain.client().createAccount(Self.alice, password: Array("pw".utf8), server: domain.hostPort)
            }
            #expect(error?.description.contains("open registration is off") == true)
        }
        try await withDomain(openRegistration: true, registrationsPerHour: 2) { domain in
            let client = try domain.client()
            try await client.createAccount(Self.alice, password: Array("pw".utf8), server: domain.hostPort)
            _ = try await client.register(Self.alice, password: Array("pw".utf8), server: domain.hostPort)
            let taken = await #expect(throws: PresenceClientError.self) {
                try await client.createAccount(Self.alice, password: Array("other".utf8), server: domain.hostPort)
            }
            #expect(taken?.description.contains("exists already") == true)
            let limited = await #expect(throws: PresenceClientError.self) {
                try await client.createAccount(try Q2QAddress("carol@example.test"), password: Array("pw".utf8), server: domain.hostPort)
            }
            #expect(limited?.description.contains("too many registrations") == true)
            // In clear, add_user is refused before anything is stored.
            let connection = try await AMPConnection.connect(host: "127.0.0.1", port: domain.port)
            let clear = await #expect(throws: PresenceError.self) {
                try await connection.call(AddUser.self, .init(name: "dave", password: Array("pw".utf8)))
            }
            #expect(clear?.code == "SecureRequired")
            await connection.close()
            #expect(try await domain.store.users(domain: nil).map(\.address.resource) == ["alice"])
        }
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence: [UInt8]) -> Bool {
        guard !subsequence.isEmpty, count >= subsequence.count else { return false }
        return (0...(count - subsequence.count)).contains { start in
            self[start..<(start + subsequence.count)].elementsEqual(subsequence)
        }
    }
}

import Crypto
import Foundation
import Q2Q
import Testing
import VertexTestSupport
@testable import PresencePostgres

/// The presence store on PostgreSQL: a private server per test (Debian's, started by
/// VertexTestSupport.PrivatePostgres), and real `vertex server` processes sharing it.
@Suite("PostgreSQL presence store")
struct PostgresStoreTests {
    static func withDatabase(_ body: (PrivatePostgres) async throws -> Void) async throws {
        let database = try await PrivatePostgres.start()
        do {
            try await body(database)
            await database.stop()
        } catch {
            await database.stop()
            throw error
        }
    }

    static func open(_ database: PrivatePostgres, sealing: CAKeySealing? = CAKeySealing(key: SymmetricKey(size: .bits256))) async throws -> PostgresPresenceStore {
        try await PostgresPresenceStore.open(try DatabaseURL(database.url), sealing: sealing, logger: .init(label: "test"))
    }

    @Test("database URLs: TCP with sslmode, Unix sockets, and one clear line for what is not one")
    func urls() throws {
        let tcp = try DatabaseURL("postgres://vertex:s%40cret@db.example.test:6543/presence?sslmode=disable")
        #expect(tcp.configuration.host == "db.example.test" && tcp.configuration.port == 6543)
        #expect(tcp.configuration.password == "s@cret" && tcp.configuration.database == "presence")
        #expect(tcp.description == "postgres://vertex@db.example.test:6543/presence")
        let socket = try DatabaseURL("postgresql://vertex@/presence?host=/run/postgresql")
        #expect(socket.configuration.unixSocketPath == "/run/postgresql/.s.PGSQL.5432")
        for bad in ["mysql://a@b/c", "postgres://b:5432/c", "postgres://a@b:5432", "postgres://a@b/c?sslmode=sometimes", "not a url"] {
            #expect(throws: DatabaseURLError.self) { try DatabaseURL(bad) }
        }
    }

    @Test("CA keys are sealed for their domain: another key or another domain does not open them")
    func sealing() throws {
        let sealing = CAKeySealing(key: SymmetricKey(size: .bits256))
        let secret = Data("a CA private key".utf8)
        let sealed = try sealing.seal(secret, domain: "a.test")
        #expect(try sealing.unseal(sealed, domain: "a.test") == secret)
        #expect(throws: CAKeySealingError.self) { try sealing.unseal(sealed, domain: "b.test") }
        #expect(throws: CAKeySealingError.self) { try CAKeySealing(key: SymmetricKey(size: .bits256)).unseal(sealed, domain: "a.test") }
        // The key file: created 0600 once, read back the same, refused when malformed.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-seal-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("ca-sealing.key")
        #expect(throws: CAKeySealingError.self) { try CAKeySealing.load(from: file, create: false) }
        let (created, isNew) = try CAKeySealing.load(from: file, create: true)
        #expect(isNew)
        let permissions = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? NSNumber
        #expect(permissions?.intValue == 0o600)
        let (loaded, again) = try CAKeySealing.load(from: file, create: true)
        #expect(!again)
        #expect(try loaded.unseal(try created.seal(secret, domain: "a.test"), domain: "a.test") == secret)
        try "not a key\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: CAKeySealingError.self) { try CAKeySealing.load(from: file, create: true) }
    }

    @Test("the PostgreSQL store keeps what the SQLite store keeps: CAs (sealed), users, certificates, revocations, pins",
          .timeLimit(.minutes(2)))
    func semantics() async throws {
        try await Self.withDatabase { database in
            let sealing = CAKeySealing(key: SymmetricKey(size: .bits256))
            let store = try await Self.open(database, sealing: sealing)
            defer { store.close() }
            #expect(try await store.appliedMigrations() == ["v1: authorities, users, certificates, pins", "v2: presence nodes"])
            // A second store on the same database applies nothing twice.
            let second = try await Self.open(database, sealing: sealing)
            defer { second.close() }

            let authority = try DomainAuthority.create(domain: "example.test")
            let stored = try await store.saveAuthorityIfAbsent(authority)
            #expect(stored.certificate.der == authority.certificate.der)
            let other = try await second.saveAuthorityIfAbsent(try DomainAuthority.create(domain: "example.test"))
            #expect(other.certificate.der == authority.certificate.der, "the first CA stored stays")
            #expect(try await second.authority(for: "example.test")?.privateKey.rawRepresentation == authority.privateKey.rawRepresentation)
            #expect(try await store.authority(for: "nowhere.test") == nil)
            // Sealed: the key is not in the table in clear, and another key cannot open it.
            let dump = try await database.run("psql", ["-h", "127.0.0.1", "-p", "\(database.port)", "-U", "vertex", "-d", "vertex", "-At", "-c",
                                                      "SELECT encode(sealed_key, 'hex') FROM authority"])
            #expect(!dump.contains(authority.privateKey.derRepresentation.map { String(format: "%02x", $0) }.joined()))
            let stranger = try await Self.open(database)
            defer { stranger.close() }
            await #expect(throws: CAKeySealingError.self) { _ = try await stranger.authority(for: "example.test") }

            let alice = try Q2QAddress("alice@example.test")
            let hash = try PasswordHash(hashing: Array("pw".utf8), logN: 10)
            #expect(try await store.addUser(alice, password: hash, now: Date(timeIntervalSince1970: 1_000)))
            #expect(try await !second.addUser(alice, password: hash, now: Date()))
            #expect(try await store.addUser(try Q2QAddress("bob@other.test"), password: hash, now: Date()))
            #expect(try await second.users(domain: "example.test").map(\.address) == [alice])
            #expect(try await second.users(domain: nil).count == 2)
            #expect(try await second.passwordHash(for: alice)?.matches(Array("pw".utf8)) == true)
            #expect(try await second.passwordHash(for: try Q2QAddress("carol@example.test")) == nil)

            var serials: [String] = []
            for day in 0..<3 {
                let key = P256.Signing.PrivateKey()
                let request = try Q2QCertificateRequest(address: alice, key: key)
                let certificate = try authority.issue(for: request, validity: 86_400, now: Date(timeIntervalSince1970: TimeInterval(day * 86_400)))
                try await store.recordIssued(certificate, for: alice, now: Date(timeIntervalSince1970: TimeInterval(day * 86_400)))
                serials.append(certificate.serial)
            }
            #expect(try await second.issuedCertificates(for: alice).map(\.serial) == serials.reversed())
            #expect(try await second.revoke(serial: serials[0].uppercased()))
            #expect(try await !second.revoke(serial: "00"))
            #expect(try await store.isRevoked(serial: serials[0]))
            #expect(try await !store.isRevoked(serial: serials[1]))
            #expect(try await store.removeUser(alice))
            #expect(try await !store.removeUser(alice))
            #expect(try await second.issuedCertificates(for: nil).allSatisfy(\.revoked))

            let peerCA = try DomainAuthority.create(domain: "peer.test").certificate
            try await store.pin(peerCA, for: "peer.test", now: Date())
            try await second.pin(peerCA, for: "peer.test", now: Date())
            #expect(try await second.pinnedAuthority(for: "peer.test")?.der == peerCA.der)
            await #expect(throws: Q2QPinError.self) {
                try await second.pin(try DomainAuthority.create(domain: "peer.test").certificate, for: "peer.test", now: Date())
            }
        }
    }
}

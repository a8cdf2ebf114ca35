import Crypto
import Foundation
import GRDB
@testable import Q2Q
import Testing

/// A fresh temporary directory, removed afterwards.
func withTemporaryDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-test-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}

func permissions(_ url: URL) throws -> Int {
    (try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as! NSNumber).intValue
}

@Suite("Stores (SQLite)")
struct StoreTests {
    @Test("the presence store migrates a new database, keeps data across reopening, and is private")
    func presenceStore() async throws {
        try await withTemporaryDirectory { directory in
            let alice = try Q2QAddress("alice@example.test")
            let authority = try DomainAuthority.create(domain: "example.test")
            do {
                let store = try SQLitePresenceStore(directory: directory)
                #expect(try store.appliedMigrations() == ["v1: authorities, users, certificates", "v2: pinned CAs of other domains"])
                #expect(try await store.saveAuthorityIfAbsent(authority).certificate == authority.certificate)
                // A second CA for the same domain does not replace the first.
                let other = try DomainAuthority.create(domain: "example.test")
                #expect(try await store.saveAuthorityIfAbsent(other).certificate == authority.certificate)
                #expect(try await store.addUser(alice, password: try PasswordHash(hashing: Array("pw".utf8), logN: 10), now: Date()))
                #expect(try await !store.addUser(alice, password: try PasswordHash(hashing: Array("x".utf8), logN: 10), now: Date()))
                let request = try Q2QCertificateRequest(address: alice, key: P256.Signing.PrivateKey())
                let certificate = try authority.issue(for: request, validity: 3600)
                try await store.recordIssued(certificate, for: alice, now: Date())
            }
            let reopened = try SQLitePresenceStore(directory: directory)
            #expect(try reopened.appliedMigrations() == ["v1: authorities, users, certificates", "v2: pinned CAs of other domains"])
            let stored = try #require(try await reopened.authority(for: "example.test"))
            #expect(stored.certificate == authority.certificate)
            #expect(stored.privateKey.rawRepresentation == authority.privateKey.rawRepresentation)
            #expect(try await reopened.users(domain: nil).map(\.address) == [alice])
            #expect(try await reopened.passwordHash(for: alice)?.matches(Array("pw".utf8)) == true)
            let issued = try await reopened.issuedCertificates(for: alice)
            #expect(issued.count == 1 && issued[0].revoked == false)
            #expect(try await !reopened.isRevoked(serial: issued[0].serial))
            #expect(try await reopened.revoke(serial: issued[0].serial.uppercased()))
            #expect(try await reopened.isRevoked(serial: issued[0].serial))
            #expect(try await !reopened.revoke(serial: "00"))
            #expect(try permissions(directory) == 0o700)
            #expect(try permissions(directory.appendingPathComponent("presence.sqlite")) == 0o600)
        }
    }

    @Test("a database made by the first schema is migrated to the latest, keeping its users")
    func migrationFromV1() async throws {
        try await withTemporaryDirectory { directory in
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let path = directory.appendingPathComponent("presence.sqlite").path
            do {
                let old = try DatabasePool(path: path)
                try SQLitePresenceStore.migrator.migrate(old, upTo: "v1: authorities, users, certificates")
                try await old.write { db in
                    try db.execute(sql: "INSERT INTO user (domain, resource, passwordHash, created) VALUES ('example.test', 'alice', 'x', 0)")
                }
                let applied = try await old.read { try SQLitePresenceStore.migrator.appliedIdentifiers($0) }
                #expect(applied == ["v1: authorities, users, certificates"])
            }
            let store = try SQLitePresenceStore(directory: directory)
            #expect(try store.appliedMigrations() == ["v1: authorities, users, certificates", "v2: pinned CAs of other domains"])
            #expect(try await store.users(domain: nil).map(\.address.description) == ["alice@example.test"])
            #expect(try await store.pinnedAuthority(for: "other.test") == nil)
        }
    }

    @Test("removing a user revokes its certificates")
    func removeUser() async throws {
        try await withTemporaryDirectory { directory in
            let store = try SQLitePresenceStore(directory: directory)
            let alice = try Q2QAddress("alice@example.test")
            let authority = try DomainAuthority.create(domain: "example.test")
            _ = try await store.addUser(alice, password: try PasswordHash(hashing: Array("pw".utf8), logN: 10), now: Date())
            let certificate = try authority.issue(for: try Q2QCertificateRequest(address: alice, key: P256.Signing.PrivateKey()), validity: 3600)
            try await store.recordIssued(certificate, for: alice, now: Date())
            #expect(try await store.removeUser(alice))
            #expect(try await !store.removeUser(alice))
            #expect(try await store.isRevoked(serial: certificate.serial))
            #expect(try await store.users(domain: "example.test").isEmpty)
        }
    }

    @Test("the node store keeps identities, pins and servers; a different pin is refused naming both fingerprints")
    func nodeStore() async throws {
        try await withTemporaryDirectory { home in
            let alice = try Q2QAddress("alice@example.test")
            let authority = try DomainAuthority.create(domain: "example.test")
            let key = P256.Signing.PrivateKey()
            let certificate = try authority.issue(for: try Q2QCertificateRequest(address: alice, key: key), validity: 3600)
            do {
                let store = try SQLiteNodeStore(home: home)
                #expect(try store.appliedMigrations() == ["v1: identities, pins, servers", "v2: authorized senders", "v3: contacts, received files"])
                try await store.saveIdentity(Q2QIdentity(address: alice, privateKey: key, certificate: certificate))
                try await store.pin(authority.certificate, for: "example.test", now: Date())
                try await store.pin(authority.certificate, for: "example.test", now: Date())  // same: fine
                try await store.setServer(HostPort(host: "127.0.0.1", port: 9999), for: "example.test")
            }
            let store = try SQLiteNodeStore(home: home)
            let identity = try #require(try await store.identity(for: alice))
            #expect(identity.certificate == certificate)
            #expect(identity.privateKey.rawRepresentation == key.rawRepresentation)
            #expect(try await store.pinnedAuthority(for: "example.test") == authority.certificate)
            #expect(try await store.server(for: "example.test") == HostPort(host: "127.0.0.1", port: 9999))
            let impostor = try DomainAuthority.create(domain: "example.test")
            let error = await #expect(throws: Q2QPinError.self) {
                try await store.pin(impostor.certificate, for: "example.test", now: Date())
            }
            #expect(error?.description.contains(authority.certificate.fingerprint) == true)
            #expect(error?.description.contains(impostor.certificate.fingerprint) == true)
            #expect(try await store.pinnedAuthority(for: "example.test") == authority.certificate)
            #expect(try permissions(home.appendingPathComponent("node.sqlite")) == 0o600)
        }
    }

    @Test("the home is --home, else VERTEX_HOME, else ~/.vertex")
    func homeDirectory() {
        #expect(SQLiteNodeStore.homeDirectory("/x", environment: ["VERTEX_HOME": "/y"]).path == "/x")
        #expect(SQLiteNodeStore.homeDirectory(nil, environment: ["VERTEX_HOME": "/y"]).path == "/y")
        #expect(SQLiteNodeStore.homeDirectory(nil, environment: [:]).lastPathComponent == ".vertex")
    }
}

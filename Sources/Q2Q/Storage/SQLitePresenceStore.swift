import Crypto
import Foundation
import GRDB

/// The presence server's store in one SQLite file, `presence.sqlite`, in its data
/// directory.
public final class SQLitePresenceStore: PresenceStore {
    let database: DatabasePool

    public init(directory: URL) throws {
        database = try SQLiteDatabase.open(directory: directory, fileName: "presence.sqlite", migrator: Self.migrator)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: authorities, users, certificates") { db in
            try db.create(table: "authority") { t in
                t.primaryKey("domain", .text)
                t.column("privateKey", .blob).notNull()
                t.column("certificate", .blob).notNull()
            }
            try db.create(table: "user") { t in
                t.column("domain", .text).notNull()
                t.column("resource", .text).notNull()
                t.column("passwordHash", .text).notNull()
                t.column("created", .integer).notNull()
                t.primaryKey(["domain", "resource"])
            }
            try db.create(table: "certificate") { t in
                t.primaryKey("serial", .text)
                t.column("domain", .text).notNull()
                t.column("resource", .text).notNull()
                t.column("issued", .integer).notNull()
                t.column("notValidAfter", .integer).notNull()
                t.column("revoked", .boolean).notNull().defaults(to: false)
                t.column("der", .blob).notNull()
            }
            try db.create(index: "certificate_by_address", on: "certificate", columns: ["domain", "resource"])
        }
        migrator.registerMigration("v2: pinned CAs of other domains") { db in
            try db.create(table: "pin") { t in
                t.primaryKey("domain", .text)
                t.column("certificate", .blob).notNull()
                t.column("pinned", .integer).notNull()
            }
        }
        return migrator
    }

    /// The migrations applied to this database, oldest first.
    public func appliedMigrations() throws -> [String] {
        try database.read { try Self.migrator.appliedIdentifiers($0) }.sorted()
    }

    public func authority(for domain: String) async throws -> DomainAuthority? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM authority WHERE domain = ?", arguments: [domain]).map(Self.authority(from:))
        }
    }

    private static func authority(from row: Row) throws -> DomainAuthority {
        let key = try P256.Signing.PrivateKey(derRepresentation: row["privateKey"] as Data)
        let certificate = try Q2QCertificate(derEncoded: Array(row["certificate"] as Data))
        return DomainAuthority(domain: row["domain"], privateKey: key, certificate: certificate)
    }

    public func saveAuthorityIfAbsent(_ authority: DomainAuthority) async throws -> DomainAuthority {
        try await database.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO authority (domain, privateKey, certificate) VALUES (?, ?, ?)",
                           arguments: [authority.domain, authority.privateKey.derRepresentation, Data(authority.certificate.der)])
            return try Self.authority(from: try Row.fetchOne(db, sql: "SELECT * FROM authority WHERE domain = ?",
                                                             arguments: [authority.domain])!)
        }
    }

    public func addUser(_ address: Q2QAddress, password: PasswordHash, now: Date) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO user (domain, resource, passwordHash, created) VALUES (?, ?, ?, ?)",
                           arguments: [address.domain, address.resource, password.description, now.storedSeconds])
            return db.changesCount == 1
        }
    }

    public func removeUser(_ address: Q2QAddress) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM user WHERE domain = ? AND resource = ?", arguments: [address.domain, address.resource])
            let removed = db.changesCount == 1
            try db.execute(sql: "UPDATE certificate SET revoked = 1 WHERE domain = ? AND resource = ?",
                           arguments: [address.domain, address.resource])
            return removed
        }
    }

    public func users(domain: String?) async throws -> [UserRecord] {
        try await database.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT domain, resource, created FROM user WHERE ?1 IS NULL OR domain = ?1 ORDER BY domain, resource
                """, arguments: [domain])
            return try rows.map { row in
                UserRecord(address: try Q2QAddress(resource: row["resource"], domain: row["domain"]),
                           created: Date(storedSeconds: row["created"]))
            }
        }
    }

    public func passwordHash(for address: Q2QAddress) async throws -> PasswordHash? {
        let text = try await database.read { db in
            try String.fetchOne(db, sql: "SELECT passwordHash FROM user WHERE domain = ? AND resource = ?",
                                arguments: [address.domain, address.resource])
        }
        return text.flatMap(PasswordHash.init)
    }

    public func recordIssued(_ certificate: Q2QCertificate, for address: Q2QAddress, now: Date) async throws {
        try await database.write { db in
            try db.execute(sql: """
                INSERT INTO certificate (serial, domain, resource, issued, notValidAfter, der) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [certificate.serial, address.domain, address.resource, now.storedSeconds,
                                 certificate.notValidAfter.storedSeconds, Data(certificate.der)])
        }
    }

    public func issuedCertificates(for address: Q2QAddress?) async throws -> [IssuedCertificateRecord] {
        try await database.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT serial, domain, resource, issued, notValidAfter, revoked FROM certificate
                WHERE ?1 IS NULL OR (domain = ?1 AND resource = ?2) ORDER BY issued DESC, serial
                """, arguments: [address?.domain, address?.resource])
            return try rows.map { row in
                IssuedCertificateRecord(serial: row["serial"],
                                        address: try Q2QAddress(resource: row["resource"], domain: row["domain"]),
                                        issued: Date(storedSeconds: row["issued"]),
                                        notValidAfter: Date(storedSeconds: row["notValidAfter"]),
                                        revoked: row["revoked"])
            }
        }
    }

    public func revoke(serial: String) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "UPDATE certificate SET revoked = 1 WHERE serial = ?", arguments: [serial.lowercased()])
            return db.changesCount == 1
        }
    }

    public func isRevoked(serial: String) async throws -> Bool {
        try await database.read { db in
            try Bool.fetchOne(db, sql: "SELECT revoked FROM certificate WHERE serial = ?", arguments: [serial]) ?? false
        }
    }

    public func pinnedAuthority(for domain: String) async throws -> Q2QCertificate? {
        try await PinTable.pinned(domain, in: database)
    }

    public func pin(_ certificate: Q2QCertificate, for domain: String, now: Date) async throws {
        try await PinTable.pin(certificate, for: domain, now: now, in: database)
    }
}

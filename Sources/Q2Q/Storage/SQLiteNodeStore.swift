import Crypto
import Foundation
import GRDB

/// A node's home (`~/.vertex` by default) in one SQLite file, `node.sqlite`.
public final class SQLiteNodeStore: NodeStore {
    let database: DatabasePool

    public init(home: URL) throws {
        database = try SQLiteDatabase.open(directory: home, fileName: "node.sqlite", migrator: Self.migrator)
    }

    /// The home directory to use: `--home`, else `$VERTEX_HOME`, else `~/.vertex`.
    public static func homeDirectory(_ explicit: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let explicit, !explicit.isEmpty { return URL(fileURLWithPath: explicit) }
        if let fromEnvironment = environment["VERTEX_HOME"], !fromEnvironment.isEmpty {
            return URL(fileURLWithPath: fromEnvironment)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".vertex")
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: identities, pins, servers") { db in
            try db.create(table: "identity") { t in
                t.primaryKey("address", .text)
                t.column("privateKey", .blob).notNull()
                t.column("certificate", .blob).notNull()
            }
            try db.create(table: "pin") { t in
                t.primaryKey("domain", .text)
                t.column("certificate", .blob).notNull()
                t.column("pinned", .integer).notNull()
            }
            try db.create(table: "server") { t in
                t.primaryKey("domain", .text)
                t.column("hostPort", .text).notNull()
            }
        }
        migrator.registerMigration("v2: authorized senders") { db in
            try db.create(table: "authorizedSender") { t in
                t.column("receiver", .text).notNull()
                t.column("sender", .text).notNull()
                t.column("added", .integer).notNull()
                t.primaryKey(["receiver", "sender"])
            }
        }
        migrator.registerMigration("v3: contacts, received files") { db in
            try db.create(table: "contact") { t in
                t.primaryKey("address", .text)
                t.column("name", .text).notNull()
                t.column("added", .integer).notNull()
            }
            try db.create(table: "receivedFile") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("receiver", .text).notNull()
                t.column("sender", .text).notNull()
                t.column("path", .text).notNull()
                t.column("size", .integer).notNull()
                t.column("verified", .boolean).notNull()
                t.column("received", .double).notNull()
            }
        }
        return migrator
    }

    public func appliedMigrations() throws -> [String] {
        try database.read { try Self.migrator.appliedIdentifiers($0) }.sorted()
    }

    private static func identity(from row: Row) throws -> Q2QIdentity {
        Q2QIdentity(address: try Q2QAddress(row["address"] as String),
                    privateKey: try P256.Signing.PrivateKey(derRepresentation: row["privateKey"] as Data),
                    certificate: try Q2QCertificate(derEncoded: Array(row["certificate"] as Data)))
    }

    public func identity(for address: Q2QAddress) async throws -> Q2QIdentity? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM identity WHERE address = ?", arguments: [address.description])
                .map(Self.identity(from:))
        }
    }

    public func identities() async throws -> [Q2QIdentity] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM identity ORDER BY address").map(Self.identity(from:))
        }
    }

    public func saveIdentity(_ identity: Q2QIdentity) async throws {
        try await database.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO identity (address, privateKey, certificate) VALUES (?, ?, ?)",
                           arguments: [identity.address.description, identity.privateKey.derRepresentation,
                                       Data(identity.certificate.der)])
        }
    }

    public func pinnedAuthority(for domain: String) async throws -> Q2QCertificate? {
        try await PinTable.pinned(domain, in: database)
    }

    public func pin(_ certificate: Q2QCertificate, for domain: String, now: Date) async throws {
        try await PinTable.pin(certificate, for: domain, now: now, in: database)
    }

    /// Forgets the pin of `domain`; `false` when there was none.
    public func removePin(for domain: String) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM pin WHERE domain = ?", arguments: [domain])
            return db.changesCount == 1
        }
    }

    public func pins() async throws -> [(domain: String, certificate: Q2QCertificate)] {
        let rows = try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT domain, certificate FROM pin ORDER BY domain").map {
                ($0["domain"] as String, $0["certificate"] as Data)
            }
        }
        return try rows.map { (domain: $0.0, certificate: try Q2QCertificate(derEncoded: Array($0.1))) }
    }

    public func server(for domain: String) async throws -> HostPort? {
        try await database.read { db in
            try String.fetchOne(db, sql: "SELECT hostPort FROM server WHERE domain = ?", arguments: [domain])
        }.flatMap(HostPort.init)
    }

    public func setServer(_ server: HostPort?, for domain: String) async throws {
        try await database.write { db in
            if let server {
                try db.execute(sql: "INSERT OR REPLACE INTO server (domain, hostPort) VALUES (?, ?)",
                               arguments: [domain, server.description])
            } else {
                try db.execute(sql: "DELETE FROM server WHERE domain = ?", arguments: [domain])
            }
        }
    }

    public func servers() async throws -> [(domain: String, server: HostPort)] {
        let rows = try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT domain, hostPort FROM server ORDER BY domain").map {
                ($0["domain"] as String, $0["hostPort"] as String)
            }
        }
        return rows.compactMap { row in HostPort(row.1).map { (domain: row.0, server: $0) } }
    }

    public func authorize(_ sender: Q2QAddress, for receiver: Q2QAddress, now: Date) async throws {
        try await database.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO authorizedSender (receiver, sender, added) VALUES (?, ?, ?)",
                           arguments: [receiver.description, sender.description, Int(now.timeIntervalSince1970)])
        }
    }

    public func removeAuthorization(of sender: Q2QAddress, for receiver: Q2QAddress) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM authorizedSender WHERE receiver = ? AND sender = ?",
                           arguments: [receiver.description, sender.description])
            return db.changesCount == 1
        }
    }

    public func authorizedSenders(for receiver: Q2QAddress) async throws -> [Q2QAddress] {
        let rows = try await database.read { db in
            try String.fetchAll(db, sql: "SELECT sender FROM authorizedSender WHERE receiver = ? ORDER BY sender",
                                arguments: [receiver.description])
        }
        return rows.compactMap { try? Q2QAddress($0) }
    }
}

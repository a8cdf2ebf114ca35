import Foundation
import GRDB

/// Opens an SQLite database in WAL mode, creating its directory (0700) and the file
/// (0600) first: the database holds private keys. SQLite gives its -wal and -shm files
/// the same permissions as the database.
enum SQLiteDatabase {
    static func open(directory: URL, fileName: String, migrator: DatabaseMigrator) throws -> DatabasePool {
        let fileManager = FileManager.default
        try fileManager.createDirectory(at: directory, withIntermediateDirectories: true,
                                        attributes: [.posixPermissions: 0o700])
        let path = directory.appendingPathComponent(fileName).path
        if !fileManager.fileExists(atPath: path) {
            let fd = Foundation.open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
            if fd >= 0 { close(fd) }
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: configuration)
        try migrator.migrate(pool)
        return pool
    }
}

extension Date {
    /// Whole seconds since 1970, as stored.
    var storedSeconds: Int64 { Int64(timeIntervalSince1970.rounded(.down)) }
    init(storedSeconds: Int64) { self.init(timeIntervalSince1970: TimeInterval(storedSeconds)) }
}

/// The `pin` table both stores keep: one CA certificate per domain, never silently
/// replaced.
enum PinTable {
    static func pinned(_ domain: String, in database: DatabasePool) async throws -> Q2QCertificate? {
        let der = try await database.read { db in
            try Data.fetchOne(db, sql: "SELECT certificate FROM pin WHERE domain = ?", arguments: [domain])
        }
        return try der.map { try Q2QCertificate(derEncoded: Array($0)) }
    }

    static func pin(_ certificate: Q2QCertificate, for domain: String, now: Date, in database: DatabasePool) async throws {
        let existing = try await database.write { db -> Data? in
            try db.execute(sql: "INSERT OR IGNORE INTO pin (domain, certificate, pinned) VALUES (?, ?, ?)",
                           arguments: [domain, Data(certificate.der), now.storedSeconds])
            return try Data.fetchOne(db, sql: "SELECT certificate FROM pin WHERE domain = ?", arguments: [domain])
        }
        if let existing, Array(existing) != certificate.der {
            throw Q2QPinError(domain: domain, pinned: Q2QCertificate.fingerprint(of: Array(existing)),
                              presented: certificate.fingerprint)
        }
    }
}

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

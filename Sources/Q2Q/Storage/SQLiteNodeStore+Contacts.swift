import Foundation
import GRDB

/// Someone the user sends to, by the name the user gave them.
public struct Contact: Sendable, Hashable, Codable {
    public var address: Q2QAddress
    public var name: String
    public var added: Date

    public init(address: Q2QAddress, name: String, added: Date) {
        self.address = address
        self.name = name
        self.added = added
    }

    /// Longest name kept: a contact list is for reading, not for storing documents.
    public static let maximumNameLength = 100
}

/// A file that arrived (verified or not), as the inbox lists it.
public struct ReceivedFile: Sendable, Hashable, Codable {
    public var id: Int64
    public var receiver: Q2QAddress
    public var sender: Q2QAddress
    public var path: String
    public var size: Int64
    public var verified: Bool
    public var received: Date

    public init(id: Int64 = 0, receiver: Q2QAddress, sender: Q2QAddress, path: String, size: Int64, verified: Bool, received: Date) {
        self.id = id
        self.receiver = receiver
        self.sender = sender
        self.path = path
        self.size = size
        self.verified = verified
        self.received = received
    }
}

/// The contact list and the inbox of `vertex app`, in the same home database as the
/// identities they belong with.
extension SQLiteNodeStore {
    public func contacts() async throws -> [Contact] {
        let rows = try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT address, name, added FROM contact ORDER BY name COLLATE NOCASE, address")
                .map { ($0["address"] as String, $0["name"] as String, $0["added"] as Int64) }
        }
        return rows.compactMap { row in
            (try? Q2QAddress(row.0)).map { Contact(address: $0, name: row.1, added: Date(timeIntervalSince1970: TimeInterval(row.2))) }
        }
    }

    /// Adds `contact`, or renames the contact of its address.
    public func saveContact(_ contact: Contact) async throws {
        try await database.write { db in
            try db.execute(sql: """
                INSERT INTO contact (address, name, added) VALUES (?, ?, ?)
                ON CONFLICT(address) DO UPDATE SET name = excluded.name
                """, arguments: [contact.address.description, contact.name, Int64(contact.added.timeIntervalSince1970)])
        }
    }

    /// Whether there was such a contact.
    public func removeContact(_ address: Q2QAddress) async throws -> Bool {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM contact WHERE address = ?", arguments: [address.description])
            return db.changesCount == 1
        }
    }

    /// Records `file` in the inbox; the record with its id.
    public func recordReceived(_ file: ReceivedFile) async throws -> ReceivedFile {
        try await database.write { db in
            try db.execute(sql: "INSERT INTO receivedFile (receiver, sender, path, size, verified, received) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [file.receiver.description, file.sender.description, file.path, file.size, file.verified,
                                       file.received.timeIntervalSince1970])
            var stored = file
            stored.id = db.lastInsertedRowID
            return stored
        }
    }

    /// The newest `limit` received files, newest first.
    public func receivedFiles(limit: Int = 200) async throws -> [ReceivedFile] {
        let rows = try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM receivedFile ORDER BY id DESC LIMIT ?", arguments: [limit])
        }
        return rows.compactMap { row in
            guard let receiver = try? Q2QAddress(row["receiver"] as String), let sender = try? Q2QAddress(row["sender"] as String) else { return nil }
            return ReceivedFile(id: row["id"], receiver: receiver, sender: sender, path: row["path"], size: row["size"],
                                verified: row["verified"], received: Date(timeIntervalSince1970: row["received"]))
        }
    }
}

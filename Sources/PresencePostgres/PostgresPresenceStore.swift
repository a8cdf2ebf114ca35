import Crypto
import Foundation
import Logging
import PostgresNIO
import Q2Q

/// The presence store on PostgreSQL (`vertex server --database postgres://…`): the same
/// semantics as ``SQLitePresenceStore``, shared by every presence node of a domain.
///
/// CA private keys are sealed (``CAKeySealing``) before they are stored. Serials are
/// random (159 bits) and the certificate table's primary key: two nodes signing at once
/// cannot record the same one.
public final class PostgresPresenceStore: PresenceStore {
    let client: PostgresClient
    /// Absent for commands that never touch CA keys (user and certificate management).
    let sealing: CAKeySealing?
    let logger: Logger
    let location: String
    private let running: Task<Void, Never>

    /// Connects (the pool runs until ``close()``) and applies the migrations.
    public static func open(_ url: DatabaseURL, sealing: CAKeySealing?, logger: Logger) async throws -> PostgresPresenceStore {
        let store = PostgresPresenceStore(url: url, sealing: sealing, logger: logger)
        do {
            try await store.migrate()
        } catch {
            store.close()
            throw PostgresStoreError("cannot prepare the database at \(url): \(PostgresStoreError.describe(error))")
        }
        return store
    }

    private init(url: DatabaseURL, sealing: CAKeySealing?, logger: Logger) {
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let client = PostgresClient(configuration: url.configuration, backgroundLogger: quiet)
        self.client = client
        self.sealing = sealing
        self.logger = logger
        self.location = url.description
        self.running = Task { await client.run() }
    }

    public func close() { running.cancel() }

    private func sealingKey() throws(CAKeySealingError) -> CAKeySealing {
        guard let sealing else { throw CAKeySealingError("no CA sealing key was given (--ca-key-file)") }
        return sealing
    }

    /// How long a store call may take: the driver's pool waits for a connection for as
    /// long as the database is away, and a caller (a `sign`) must hear back instead.
    static let callTimeout: Duration = .seconds(5)

    /// Runs a query within ``callTimeout``, turning the driver's errors into one line
    /// naming the database.
    func run<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await withTimeout(Self.callTimeout, what, body)
        } catch is Q2QTimeoutError {
            throw PostgresStoreError("\(what) failed: the database at \(location) did not answer within \(Self.callTimeout)")
        } catch let error as PostgresStoreError {
            throw error
        } catch let error as Q2QPinError {
            throw error
        } catch let error as CAKeySealingError {
            throw error
        } catch {
            throw PostgresStoreError("\(what) failed at \(location): \(PostgresStoreError.describe(error))")
        }
    }

    public func authority(for domain: String) async throws -> DomainAuthority? {
        try await run("reading the CA of \(domain)") { [self] in
            let rows = try await client.query("SELECT sealed_key, certificate FROM authority WHERE domain = \(domain)")
            for try await (sealed, certificate) in rows.decode((ByteBuffer, ByteBuffer).self) {
                return try authority(domain, sealed: sealed, certificate: certificate)
            }
            return nil
        }
    }

    private func authority(_ domain: String, sealed: ByteBuffer, certificate: ByteBuffer) throws -> DomainAuthority {
        let key = try sealingKey().unseal(Data(sealed.readableBytesView), domain: domain)
        return DomainAuthority(domain: domain, privateKey: try P256.Signing.PrivateKey(derRepresentation: key),
                               certificate: try Q2QCertificate(derEncoded: Array(certificate.readableBytesView)))
    }

    public func saveAuthorityIfAbsent(_ authority: DomainAuthority) async throws -> DomainAuthority {
        try await run("storing the CA of \(authority.domain)") { [self] in
            let sealed = ByteBuffer(bytes: try sealingKey().seal(authority.privateKey.derRepresentation, domain: authority.domain))
            let certificate = ByteBuffer(bytes: authority.certificate.der)
            try await client.query("""
                INSERT INTO authority (domain, sealed_key, certificate) VALUES (\(authority.domain), \(sealed), \(certificate))
                ON CONFLICT (domain) DO NOTHING
                """)
            guard let stored = try await self.authority(for: authority.domain) else {
                throw PostgresStoreError("the CA of \(authority.domain) vanished after it was stored")
            }
            return stored
        }
    }

    public func addUser(_ address: Q2QAddress, password: PasswordHash, now: Date) async throws -> Bool {
        try await run("adding \(address)") { [self] in
            let rows = try await client.query("""
                INSERT INTO users (domain, resource, password_hash, created)
                VALUES (\(address.domain), \(address.resource), \(password.description), \(Int64(now.timeIntervalSince1970)))
                ON CONFLICT DO NOTHING RETURNING resource
                """)
            return try await rows.collect().count == 1
        }
    }

    public func removeUser(_ address: Q2QAddress) async throws -> Bool {
        try await run("removing \(address)") { [self] in
            try await client.withTransaction(logger: logger) { connection in
                let removed = try await connection.query("""
                    DELETE FROM users WHERE domain = \(address.domain) AND resource = \(address.resource) RETURNING resource
                    """, logger: logger).collect().count == 1
                try await connection.query("""
                    UPDATE certificate SET revoked = TRUE WHERE domain = \(address.domain) AND resource = \(address.resource)
                    """, logger: logger)
                return removed
            }
        }
    }

    public func users(domain: String?) async throws -> [UserRecord] {
        try await run("listing users") { [self] in
            let rows = try await client.query("""
                SELECT domain, resource, created FROM users WHERE \(domain)::text IS NULL OR domain = \(domain)
                ORDER BY domain, resource
                """)
            var users: [UserRecord] = []
            for try await (domain, resource, created) in rows.decode((String, String, Int64).self) {
                users.append(UserRecord(address: try Q2QAddress(resource: resource, domain: domain),
                                        created: Date(timeIntervalSince1970: TimeInterval(created))))
            }
            return users
        }
    }

    public func passwordHash(for address: Q2QAddress) async throws -> PasswordHash? {
        try await run("reading the password hash of \(address)") { [self] in
            let rows = try await client.query("""
                SELECT password_hash FROM users WHERE domain = \(address.domain) AND resource = \(address.resource)
                """)
            for try await hash in rows.decode(String.self) { return PasswordHash(hash) }
            return nil
        }
    }

    public func recordIssued(_ certificate: Q2QCertificate, for address: Q2QAddress, now: Date) async throws {
        try await run("recording certificate \(certificate.serial)") { [self] in
            try await client.query("""
                INSERT INTO certificate (serial, domain, resource, issued, not_valid_after, der)
                VALUES (\(certificate.serial), \(address.domain), \(address.resource), \(Int64(now.timeIntervalSince1970)),
                        \(Int64(certificate.notValidAfter.timeIntervalSince1970)), \(ByteBuffer(bytes: certificate.der)))
                """)
        }
    }

    public func issuedCertificates(for address: Q2QAddress?) async throws -> [IssuedCertificateRecord] {
        try await run("listing certificates") { [self] in
            let rows = try await client.query("""
                SELECT serial, domain, resource, issued, not_valid_after, revoked FROM certificate
                WHERE \(address?.domain)::text IS NULL OR (domain = \(address?.domain) AND resource = \(address?.resource))
                ORDER BY issued DESC, serial
                """)
            var records: [IssuedCertificateRecord] = []
            for try await (serial, domain, resource, issued, notValidAfter, revoked) in rows.decode((String, String, String, Int64, Int64, Bool).self) {
                records.append(IssuedCertificateRecord(serial: serial, address: try Q2QAddress(resource: resource, domain: domain),
                                                       issued: Date(timeIntervalSince1970: TimeInterval(issued)),
                                                       notValidAfter: Date(timeIntervalSince1970: TimeInterval(notValidAfter)),
                                                       revoked: revoked))
            }
            return records
        }
    }

    public func revoke(serial: String) async throws -> Bool {
        try await run("revoking \(serial)") { [self] in
            try await client.query("UPDATE certificate SET revoked = TRUE WHERE serial = \(serial.lowercased()) RETURNING serial")
                .collect().count == 1
        }
    }

    public func isRevoked(serial: String) async throws -> Bool {
        try await run("checking \(serial)") { [self] in
            for try await revoked in try await client.query("SELECT revoked FROM certificate WHERE serial = \(serial)").decode(Bool.self) {
                return revoked
            }
            return false
        }
    }

    public func pinnedAuthority(for domain: String) async throws -> Q2QCertificate? {
        try await run("reading the pin of \(domain)") { [self] in
            for try await der in try await client.query("SELECT certificate FROM pin WHERE domain = \(domain)").decode(ByteBuffer.self) {
                return try Q2QCertificate(derEncoded: Array(der.readableBytesView))
            }
            return nil
        }
    }

    public func pin(_ certificate: Q2QCertificate, for domain: String, now: Date) async throws {
        try await run("pinning the CA of \(domain)") { [self] in
            try await client.query("""
                INSERT INTO pin (domain, certificate, pinned) VALUES (\(domain), \(ByteBuffer(bytes: certificate.der)),
                \(Int64(now.timeIntervalSince1970))) ON CONFLICT (domain) DO NOTHING
                """)
            guard let pinned = try await pinnedAuthority(for: domain) else { return }
            if pinned.der != certificate.der {
                throw Q2QPinError(domain: domain, pinned: pinned.fingerprint, presented: certificate.fingerprint)
            }
        }
    }
}

/// A database failure, on one line.
public struct PostgresStoreError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }

    /// PSQLError's own description hides the server's message behind a generic one;
    /// this digs it out (and the connection failure's cause).
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            if let underlying = error.underlying { return "\(error.code): \(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }
}

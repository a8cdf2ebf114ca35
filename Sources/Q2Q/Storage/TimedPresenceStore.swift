import Foundation

/// A ``PresenceStore`` whose every call is timed into the server's metrics
/// (`vertex_presence_database_duration_seconds{operation}`).
struct TimedPresenceStore: PresenceStore {
    let store: any PresenceStore
    let metrics: PresenceMetrics

    func authority(for domain: String) async throws -> DomainAuthority? {
        try await metrics.timed("authority") { try await store.authority(for: domain) }
    }

    func saveAuthorityIfAbsent(_ authority: DomainAuthority) async throws -> DomainAuthority {
        try await metrics.timed("save_authority") { try await store.saveAuthorityIfAbsent(authority) }
    }

    func addUser(_ address: Q2QAddress, password: PasswordHash, now: Date) async throws -> Bool {
        try await metrics.timed("add_user") { try await store.addUser(address, password: password, now: now) }
    }

    func removeUser(_ address: Q2QAddress) async throws -> Bool {
        try await metrics.timed("remove_user") { try await store.removeUser(address) }
    }

    func users(domain: String?) async throws -> [UserRecord] {
        try await metrics.timed("users") { try await store.users(domain: domain) }
    }

    func passwordHash(for address: Q2QAddress) async throws -> PasswordHash? {
        try await metrics.timed("password_hash") { try await store.passwordHash(for: address) }
    }

    func recordIssued(_ certificate: Q2QCertificate, for address: Q2QAddress, now: Date) async throws {
        try await metrics.timed("record_issued") { try await store.recordIssued(certificate, for: address, now: now) }
    }

    func issuedCertificates(for address: Q2QAddress?) async throws -> [IssuedCertificateRecord] {
        try await metrics.timed("issued_certificates") { try await store.issuedCertificates(for: address) }
    }

    func revoke(serial: String) async throws -> Bool {
        try await metrics.timed("revoke") { try await store.revoke(serial: serial) }
    }

    func isRevoked(serial: String) async throws -> Bool {
        try await metrics.timed("is_revoked") { try await store.isRevoked(serial: serial) }
    }

    func pinnedAuthority(for domain: String) async throws -> Q2QCertificate? {
        try await metrics.timed("pinned_authority") { try await store.pinnedAuthority(for: domain) }
    }

    func pin(_ certificate: Q2QCertificate, for domain: String, now: Date) async throws {
        try await metrics.timed("pin") { try await store.pin(certificate, for: domain, now: now) }
    }
}

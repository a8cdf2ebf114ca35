import Foundation

/// A user account of a domain.
public struct UserRecord: Sendable, Hashable {
    public var address: Q2QAddress
    public var created: Date

    package init(address: Q2QAddress, created: Date) {
        self.address = address
        self.created = created
    }
}

/// A certificate the domain issued.
public struct IssuedCertificateRecord: Sendable, Hashable {
    public var serial: String
    public var address: Q2QAddress
    public var issued: Date
    public var notValidAfter: Date
    public var revoked: Bool

    package init(serial: String, address: Q2QAddress, issued: Date, notValidAfter: Date, revoked: Bool) {
        self.serial = serial
        self.address = address
        self.issued = issued
        self.notValidAfter = notValidAfter
        self.revoked = revoked
    }
}

/// What a presence server keeps: its domains' CAs, users with password hashes, the
/// certificates it issued and the serials it revoked.
///
/// The protocol code talks only to this; SQLite (``SQLitePresenceStore``) is the
/// embedded default, and a shared database for several presence nodes can implement
/// the same calls.
public protocol PresenceStore: Sendable {
    /// The CA of `domain`, if this server holds it.
    func authority(for domain: String) async throws -> DomainAuthority?
    /// Stores `authority` unless one exists for its domain already; returns the one
    /// that is stored afterwards (so two processes starting at once agree).
    func saveAuthorityIfAbsent(_ authority: DomainAuthority) async throws -> DomainAuthority

    /// Adds a user; `false` when the address exists already.
    func addUser(_ address: Q2QAddress, password: PasswordHash, now: Date) async throws -> Bool
    /// Removes a user and revokes every certificate issued to it; `false` when unknown.
    func removeUser(_ address: Q2QAddress) async throws -> Bool
    /// Users of `domain`, or of every domain.
    func users(domain: String?) async throws -> [UserRecord]
    func passwordHash(for address: Q2QAddress) async throws -> PasswordHash?

    func recordIssued(_ certificate: Q2QCertificate, for address: Q2QAddress, now: Date) async throws
    /// Issued certificates, of one address or all, newest first.
    func issuedCertificates(for address: Q2QAddress?) async throws -> [IssuedCertificateRecord]
    /// Revokes a serial (lowercase hex). `false` when this server never issued it.
    func revoke(serial: String) async throws -> Bool
    func isRevoked(serial: String) async throws -> Bool

    /// The CA of another domain, pinned when one of its users first secured a
    /// connection here.
    func pinnedAuthority(for domain: String) async throws -> Q2QCertificate?
    /// Pins another domain's CA; a different certificate than the pinned one is refused
    /// with ``Q2QPinError``.
    func pin(_ certificate: Q2QCertificate, for domain: String, now: Date) async throws
}

/// What a node (a user's Vertex) keeps in its home: its identities, the domain CAs it
/// pinned, and where each domain's presence server is.
public protocol NodeStore: Sendable {
    func identity(for address: Q2QAddress) async throws -> Q2QIdentity?
    func identities() async throws -> [Q2QIdentity]
    /// Stores or replaces the identity of `identity.address`.
    func saveIdentity(_ identity: Q2QIdentity) async throws

    func pinnedAuthority(for domain: String) async throws -> Q2QCertificate?
    /// Pins `certificate` as `domain`'s CA. Refuses to replace a different pin
    /// (``Q2QPinError``); pinning the same certificate again is a no-op.
    func pin(_ certificate: Q2QCertificate, for domain: String, now: Date) async throws

    func server(for domain: String) async throws -> HostPort?
    /// Sets (or, with `nil`, forgets) where `domain`'s presence server is.
    func setServer(_ server: HostPort?, for domain: String) async throws
    func servers() async throws -> [(domain: String, server: HostPort)]

    /// Trusts `sender` to send to `receiver` without asking (the original's `authorize`).
    func authorize(_ sender: Q2QAddress, for receiver: Q2QAddress, now: Date) async throws
    /// Whether a trust existed and was removed.
    func removeAuthorization(of sender: Q2QAddress, for receiver: Q2QAddress) async throws -> Bool
    func authorizedSenders(for receiver: Q2QAddress) async throws -> [Q2QAddress]
}

/// A domain's CA is not the one pinned for it.
public struct Q2QPinError: Error, Sendable, Hashable, CustomStringConvertible {
    public var domain: String
    public var pinned: String
    public var presented: String

    package init(domain: String, pinned: String, presented: String) {
        self.domain = domain
        self.pinned = pinned
        self.presented = presented
    }

    public var description: String {
        "the CA certificate of \(domain) has changed: pinned \(pinned), server presents \(presented). "
            + "If the domain really changed its CA, remove the pin (vertex pins remove \(domain)) and connect again; otherwise someone may be intercepting."
    }
}

import AMP
import Crypto
import Foundation
import Logging
import X509
import NIOCore
import NIOPosix
import NIOSSL

/// The client side of a presence server: finding it, learning (and pinning) its
/// domain's CA, securing a connection, and obtaining a certificate.
public struct PresenceClient: Sendable {
    public let store: any NodeStore
    public var group: any EventLoopGroup
    public var logger: Logger

    /// The original's well-known port for presence servers.
    public static let defaultPort = 8788

    public init(store: any NodeStore, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "vertex.client")) {
        self.store = store
        self.group = group
        self.logger = logger
    }

    /// Where `domain`'s presence server is: `explicit`, else the home's mapping
    /// (`vertex servers set`), else the domain's own name on port 8788 (as the original).
    public func server(for domain: String, explicit: HostPort? = nil) async throws -> HostPort {
        try await serverChoice(for: domain, explicit: explicit).server
    }

    /// Where `domain`'s presence server is, and where that choice came from.
    public func serverChoice(for domain: String, explicit: HostPort? = nil) async throws -> ServerChoice {
        if let explicit { return ServerChoice(domain: domain, server: explicit, source: .explicit) }
        if let mapped = try await store.server(for: domain) { return ServerChoice(domain: domain, server: mapped, source: .recorded) }
        return ServerChoice(domain: domain, server: HostPort(host: domain, port: Self.defaultPort), source: .domainName)
    }

    /// A domain's presence server and why it is that one, for errors a person can act on.
    public struct ServerChoice: Sendable, Equatable {
        public enum Source: String, Sendable, Codable {
            case explicit = "--server"
            case recorded = "vertex servers set"
            case domainName = "the domain's own name"
        }
        public var domain: String
        public var server: HostPort
        public var source: Source

        /// "198.51.100.10:8788 (recorded with vertex servers set; change it with …)".
        public var explanation: String {
            let change = "vertex servers set \(domain) HOST:PORT"
            switch source {
            case .explicit: return "\(server) (given with --server)"
            case .recorded: return "\(server) (recorded with vertex servers set; change it with: \(change))"
            case .domainName: return "\(server) (the domain's own name: no server recorded for \(domain); set one with: \(change), or register with --server)"
            }
        }
    }

    /// `error` with the choice of server explained, when it is a failure to connect.
    public func explained(_ error: any Error, for domain: String, explicit: HostPort? = nil) async -> any Error {
        guard let error = error as? PresenceClientError, let server = error.unreachableServer,
              let choice = try? await serverChoice(for: domain, explicit: explicit), choice.server == server else { return error }
        var explained = error
        explained.description = "cannot reach the presence server of \(domain) at \(choice.explanation): \(error.underlying ?? error.description)"
        return explained
    }

    /// A new AMP connection to a presence server; `responders` answer what the server
    /// sends us (a listening node answers forwarded `inbound`).
    public func connect(to server: HostPort, responders: AMPResponders = AMPResponders()) async throws -> AMPConnection {
        try await Self.connect(to: server, group: group, logger: logger, responders: responders)
    }

    static func connect(to server: HostPort, group: any EventLoopGroup, logger: Logger,
                        responders: AMPResponders = AMPResponders()) async throws -> AMPConnection {
        do {
            return try await AMPConnection.connect(host: server.host, port: server.port, responders: responders,
                                                   group: group, logger: logger)
        } catch {
            var failure = PresenceClientError("cannot connect to the presence server at \(server): \(error)")
            failure.unreachableServer = server
            failure.underlying = "\(error)"
            throw failure
        }
    }

    /// Runs `body` on a new connection to `server`, and closes it afterwards.
    public func withConnection<Result: Sendable>(to server: HostPort, _ body: (AMPConnection) async throws -> Result) async throws -> Result {
        try await Self.withConnection(to: server, group: group, logger: logger, body)
    }

    static func withConnection<Result: Sendable>(to server: HostPort, group: any EventLoopGroup, logger: Logger,
                                                 _ body: (AMPConnection) async throws -> Result) async throws -> Result {
        let connection = try await connect(to: server, group: group, logger: logger)
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    /// A new connection to `server` on which `setUp` runs; closed if `setUp` fails,
    /// returned open otherwise.
    public func withNewConnection(to server: HostPort, responders: AMPResponders,
                                  _ setUp: (AMPConnection) async throws -> Void) async throws -> AMPConnection {
        let connection = try await connect(to: server, responders: responders)
        do {
            try await setUp(connection)
            return connection
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Asks for `domain`'s CA on `connection` (in clear) and checks it against what is
    /// pinned: a first answer is pinned (trust on first use, unless `fingerprint` is
    /// given, which the answer must match); a different answer later is an error that
    /// names both fingerprints.
    @discardableResult
    public func identify(_ domain: String, on connection: AMPConnection, fingerprint: String? = nil) async throws -> Q2QCertificate {
        let subject = try Q2QAddress(resource: nil, domain: domain)
        let answer: Identify.Response
        do {
            answer = try await connection.call(Identify.self, .init(subject: subject))
        } catch let error as PresenceError {
            throw PresenceClientError("\(error.errorDescription)")
        }
        let certificate = answer.certificate
        try Self.checkAuthority(certificate, of: subject.domain)
        if let fingerprint, Self.normalized(fingerprint) != Self.normalized(certificate.fingerprint) {
            throw PresenceClientError("the CA certificate of \(domain) is \(certificate.fingerprint), not the expected \(fingerprint)")
        }
        try await store.pin(certificate, for: subject.domain, now: Date())
        return certificate
    }

    /// What an `identify` answer must be: a self-signed certificate naming the domain.
    static func checkAuthority(_ certificate: Q2QCertificate, of domain: String) throws {
        guard certificate.commonName == domain, certificate.address == (try? Q2QAddress(resource: nil, domain: domain)),
              certificate.certificate.issuer == certificate.certificate.subject,
              certificate.certificate.publicKey.isValidSignature(certificate.certificate.signature, for: certificate.certificate) else {
            throw PresenceClientError("the CA certificate given for \(domain) names \(certificate.commonName ?? "nothing") or is not self-signed")
        }
    }

    /// Learns `domain`'s CA from its presence server at `server` (a connection of its
    /// own, in clear, as the original): trust on first use, to be pinned by the caller.
    static func fetchAuthority(of domain: String, from server: HostPort, group: any EventLoopGroup, logger: Logger) async throws -> Q2QCertificate {
        try await withConnection(to: server, group: group, logger: logger) { connection in
            let subject = try Q2QAddress(resource: nil, domain: domain)
            let certificate = try await connection.call(Identify.self, .init(subject: subject)).certificate
            try checkAuthority(certificate, of: domain)
            return certificate
        }
    }

    private static func normalized(_ fingerprint: String) -> String {
        var text = fingerprint.uppercased()
        if text.hasPrefix("SHA256:") { text.removeFirst(7) }
        return text.filter { $0 != ":" }
    }

    /// Switches `connection` to TLS with `secure`, verifying the server against the CA
    /// pinned for `domain`. With an identity, the server verifies us too (authorize).
    public func secure(_ connection: AMPConnection, domain: String, authority: Q2QCertificate, as identity: Q2QIdentity?) async throws {
        let server = try Q2QAddress(resource: nil, domain: domain)
        var configuration: TLSConfiguration
        if let identity {
            configuration = try identity.tlsConfiguration(server: false)
        } else {
            configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv13
            configuration.trustRoots = Q2QIdentity.noTrustRoots
        }
        configuration.certificateVerification = .noHostnameVerification
        let verifier = Q2QPeerVerifier(expected: server, authority: authority)
        do {
            _ = try await connection.startTLS(
                Secure.self, .init(from: identity?.address, to: server, authorize: identity != nil),
                upgrade: AMPTLSUpgrade(configuration: configuration, verification: verifier.tlsVerification))
        } catch let error as PresenceError {
            throw PresenceClientError("\(error.errorDescription)")
        } catch let error as NIOSSLError {
            throw PresenceClientError("TLS with the presence server of \(domain) failed: \(error)")
        }
        // In TLS 1.3 the server checks our certificate after our side of the handshake
        // is done; a round trip shows whether it accepted it.
        guard let identity else { return }
        do {
            _ = try await connection.call(SourceIP.self, AMPEmpty())
        } catch {
            throw PresenceClientError("the presence server of \(domain) refused the certificate of \(identity.address) "
                                      + "(serial \(identity.certificate.serial)): revoked, expired, or not issued by \(domain)")
        }
    }

    /// Obtains a certificate for `address` with its password: a new P-256 key, a
    /// request, `identify` (pinning), `secure` without a certificate, then `sign`. The
    /// identity is stored only once the certificate has been checked.
    public func register(_ address: Q2QAddress, password: [UInt8], server explicit: HostPort? = nil,
                         fingerprint: String? = nil) async throws -> Q2QIdentity {
        guard !address.resource.isEmpty else { throw PresenceClientError("\(address) is a domain; register a user address, user@\(address.domain)") }
        let key = P256.Signing.PrivateKey()
        let request = try Q2QCertificateRequest(address: address, key: key)
        let (authority, certificate) = try await withConnection(to: try await server(for: address.domain, explicit: explicit)) { connection in
            let authority = try await identify(address.domain, on: connection, fingerprint: fingerprint)
            try await secure(connection, domain: address.domain, authority: authority, as: nil)
            do {
                return (authority, try await connection.call(Sign.self, .init(certificateRequest: request, password: password)).certificate)
            } catch let error as PresenceError {
                throw PresenceClientError(error.errorDescription)
            }
        }
        // The certificate must be ours: our key, our address, from the pinned CA.
        guard certificate.certificate.publicKey == request.request.publicKey else {
            throw PresenceClientError("the server signed a different key")
        }
        do {
            try await Q2QPeerVerifier(expected: address, authority: authority).verify([certificate.certificate])
        } catch {
            throw PresenceClientError("the server's certificate for \(address) does not verify: \(error)")
        }
        let identity = Q2QIdentity(address: address, privateKey: key, certificate: certificate)
        try await store.saveIdentity(identity)
        return identity
    }

    /// Creates an account on a server with open registration (`add_user` over TLS).
    public func createAccount(_ address: Q2QAddress, password: [UInt8], server explicit: HostPort? = nil,
                              fingerprint: String? = nil) async throws {
        try await withConnection(to: try await server(for: address.domain, explicit: explicit)) { connection in
            let authority = try await identify(address.domain, on: connection, fingerprint: fingerprint)
            try await secure(connection, domain: address.domain, authority: authority, as: nil)
            do {
                _ = try await connection.call(AddUser.self, .init(name: address.resource, password: password))
            } catch let error as PresenceError {
                throw PresenceClientError(error.errorDescription)
            }
        }
    }

    /// The caller's address as the server sees it (`Who-Am-I`).
    public static func whoAmI(server: HostPort, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                              logger: Logger = Logger(label: "vertex.client")) async throws -> HostPort {
        try await withConnection(to: server, group: group, logger: logger) { try await $0.call(WhoAmI.self, AMPEmpty()).address }
    }
}

/// A client-side failure, worded for the person at the terminal.
public struct PresenceClientError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The server that could not be reached, when that is the failure.
    public var unreachableServer: HostPort?
    var underlying: String?
    public init(_ description: String) { self.description = description }
}

import Foundation
import Locking
import Logging
import NIOCore

/// Learns another domain's CA from its presence server on first use (trust on first
/// use, as the original), within bounds the original did not have (security review M10):
/// - a deadline, so that a server that never answers holds nobody;
/// - a memory of recent failures, so that a domain that failed is not asked again at
///   every attempt;
/// - never for a domain that is an IP address unless its server was named explicitly
///   (`vertex servers set`, `--peer-server`): `user@10.0.0.5` must not make us connect
///   to an internal host of the attacker's choosing.
final class AuthorityFetcher: Sendable {
    static let timeout: Duration = .seconds(10)
    /// How long a failure is remembered.
    static let failureMemory: TimeInterval = 60
    static let maximumRemembered = 4096

    private let failures = Locked<[String: (error: String, until: Date)]>([:])

    /// `domain`'s CA from the presence server at `server`; `explicit` when that server
    /// was configured rather than derived from the domain's name.
    func fetch(_ domain: String, from server: HostPort, explicit: Bool, group: any EventLoopGroup, logger: Logger,
               now: Date = Date()) async throws -> Q2QCertificate {
        guard explicit || !HostPort.isIPAddress(domain) else {
            throw PresenceClientError("\(domain) is an IP address, not a domain: its CA is learnt only from a server named for it (vertex servers set)")
        }
        if let failure = failures.withLock({ $0[domain] }), failure.until > now {
            throw PresenceClientError("the CA of \(domain) could not be learnt a moment ago (\(failure.error)); not asking again yet")
        }
        do {
            return try await withTimeout(Self.timeout, "asking \(server) for the CA of \(domain)") {
                try await PresenceClient.fetchAuthority(of: domain, from: server, group: group, logger: logger)
            }
        } catch {
            failures.withLock { failures in
                if failures.count >= Self.maximumRemembered { failures = failures.filter { $0.value.until > now } }
                if failures.count < Self.maximumRemembered {
                    failures[domain] = ("\(error)", now + Self.failureMemory)
                }
            }
            throw error
        }
    }
}

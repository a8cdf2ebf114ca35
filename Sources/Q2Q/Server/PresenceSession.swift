import Foundation
import Locking

/// What one connection to the presence server has established so far.
///
/// An address is authenticated only by a TLS handshake that completed on this
/// connection with a certificate verified during it (``authenticate(_:)``, called by the
/// ``AMP/TLSPeerGate``), never by what `secure` claims: `secure` records the claim,
/// and the handshake must prove it.
final class PresenceSession: Sendable {
    struct State {
        /// The domain the connection was secured for (`secure`'s `to`).
        var securedDomain: String?
        /// The address `secure` with `authorize` claimed, until the handshake proves it.
        var claimed: Q2QAddress?
        /// The address the caller proved in this connection's TLS handshake, with the
        /// certificate it presented there.
        var authenticated: Q2QAddress?
        var certificate: Q2QCertificate?
    }

    private let state = Locked(State())

    var securedDomain: String? { state.withLock { $0.securedDomain } }
    var authenticated: Q2QAddress? { state.withLock { $0.authenticated } }
    /// The certificate the authenticated caller presented in this connection's handshake.
    var certificate: Q2QCertificate? { state.withLock { $0.certificate } }

    /// Records a `secure` and the address it claims (nil: anonymous); `false` if the
    /// connection was already secured.
    func secure(domain: String, claiming claimed: Q2QAddress?) -> Bool {
        state.withLock { state in
            guard state.securedDomain == nil else { return false }
            state.securedDomain = domain
            state.claimed = claimed
            return true
        }
    }

    /// The handshake completed with `certificate` verified for the claimed address: the
    /// connection is that address from now on. `false` (and nothing recorded) when the
    /// certificate names another address than the claim.
    @discardableResult
    func authenticate(_ certificate: Q2QCertificate) -> Bool {
        state.withLock { state in
            guard let claimed = state.claimed, state.authenticated == nil, certificate.address == claimed else { return false }
            state.authenticated = claimed
            state.certificate = certificate
            return true
        }
    }
}

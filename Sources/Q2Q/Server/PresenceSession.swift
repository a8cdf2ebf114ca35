import Synchronization

/// What one connection to the presence server has established so far.
final class PresenceSession: Sendable {
    struct State {
        /// The domain the connection was secured for (`secure`'s `to`).
        var securedDomain: String?
        /// The address the caller proved with its certificate (`secure` with `authorize`).
        var authenticated: Q2QAddress?
    }

    private let state = Mutex(State())

    var securedDomain: String? { state.withLock { $0.securedDomain } }
    var authenticated: Q2QAddress? { state.withLock { $0.authenticated } }

    /// Records a `secure`; `false` if the connection was already secured.
    func secure(domain: String, authenticated: Q2QAddress?) -> Bool {
        state.withLock { state in
            guard state.securedDomain == nil else { return false }
            state.securedDomain = domain
            state.authenticated = authenticated
            return true
        }
    }
}

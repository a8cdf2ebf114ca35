import Foundation

/// Who may use the app's HTTP interface: a value with one pure decision, so that every
/// rule is tested without a server.
///
/// - The `Host` must name this server (loopback names, or the address it was told to
///   listen on) with its port: a page of another site that rebinds its DNS name to
///   127.0.0.1 still sends its own name, and is refused.
/// - An `Origin`, when sent, must be this server's own: no other site's page can make
///   the browser act on the app. (Browsers send it with every POST and DELETE.)
/// - Every request carries the access token: in the cookie set on the first visit (the
///   URL `vertex app` prints has it in the query), or as `Authorization: Bearer`.
public struct AccessPolicy: Sendable {
    public var token: String
    public var port: Int
    /// Host names (lowercased, IPv6 in brackets) the app answers to.
    public var hosts: Set<String>

    public static let loopbackHosts: Set<String> = ["127.0.0.1", "localhost", "[::1]"]

    public init(token: String, port: Int, hosts: Set<String> = loopbackHosts) {
        self.token = token
        self.port = port
        self.hosts = Set(hosts.map { $0.lowercased() })
    }

    /// Cookies are not kept apart by port: two apps on one host need two names.
    public var cookieName: String { "vertex_app_\(port)" }

    public struct Request: Sendable {
        public var method: String
        public var authority: String?
        public var origin: String?
        public var queryToken: String?
        public var cookieToken: String?
        public var bearerToken: String?

        public init(method: String, authority: String?, origin: String?, queryToken: String? = nil, cookieToken: String? = nil,
                    bearerToken: String? = nil) {
            self.method = method
            self.authority = authority
            self.origin = origin
            self.queryToken = queryToken
            self.cookieToken = cookieToken
            self.bearerToken = bearerToken
        }
    }

    public enum Decision: Equatable, Sendable {
        case allow
        /// The token came in the URL: set the cookie, and send the browser to the same
        /// page without the token in its address bar.
        case grant
        case refuse(String)
    }

    public func decide(_ request: Request) -> Decision {
        guard let authority = request.authority?.lowercased(), names(authority) else {
            return .refuse("the Host header does not name this app (\(request.authority?.prefix(100) ?? "none"))")
        }
        if let origin = request.origin, origin.lowercased() != "http://\(authority)" {
            return .refuse("a request from another site (Origin \(origin.prefix(100))) is not taken")
        }
        if let cookie = request.cookieToken, Self.same(cookie, token) { return .allow }
        if let bearer = request.bearerToken, Self.same(bearer, token) { return .allow }
        if let query = request.queryToken, Self.same(query, token) {
            return request.method == "GET" ? .grant : .allow
        }
        return .refuse("no access token: open the URL vertex app printed (it carries the token)")
    }

    /// Whether `authority` (host:port) is this app's.
    private func names(_ authority: String) -> Bool {
        let host: Substring
        let port: Int?
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            host = authority[..<colon]
            port = Int(authority[authority.index(after: colon)...])
        } else {
            host = Substring(authority)
            port = 80
        }
        return port == self.port && hosts.contains(String(host))
    }

    /// Compares in time that depends on the lengths only.
    static func same(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// A new token: 32 random bytes, URL-safe base64.
    public static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

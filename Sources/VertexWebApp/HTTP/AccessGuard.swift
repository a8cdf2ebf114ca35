import HTTPTypes
import Hummingbird
import Locking
import Logging

/// Applies the ``AccessPolicy`` to every request before any route sees it, and adds
/// the headers that keep the page from being framed, sniffed or cached.
struct AccessGuard<Context: RequestContext>: RouterMiddleware {
    /// Set once the server is bound (the port is part of the policy).
    let policy: Locked<AccessPolicy?>
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let policy = policy.withLock({ $0 }) else { return Self.refusal("starting") }
        let bearer = request.headers[.authorization].flatMap { value -> String? in
            value.hasPrefix("Bearer ") ? String(value.dropFirst("Bearer ".count)) : nil
        }
        let decision = policy.decide(.init(method: request.method.rawValue,
                                           authority: request.head.authority,
                                           origin: request.headers[.origin],
                                           queryToken: request.uri.queryParameters["token"].map(String.init),
                                           cookieToken: request.cookies[policy.cookieName]?.value,
                                           bearerToken: bearer))
        var response: Response
        switch decision {
        case .allow:
            response = try await next(request, context)
        case .grant:
            response = Response(status: .seeOther, headers: [.location: request.uri.path.isEmpty ? "/" : request.uri.path])
            response.setCookie(Cookie(name: policy.cookieName, value: policy.token, path: "/", httpOnly: true, sameSite: .strict))
        case .refuse(let reason):
            logger.notice("refused a request", metadata: ["path": "\(request.uri.path.prefix(100))", "reason": "\(reason)"])
            response = Self.refusal(reason)
        }
        Self.secure(&response.headers)
        return response
    }

    static func refusal(_ reason: String) -> Response {
        Response(status: .forbidden, headers: [.contentType: "text/plain; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: "403 forbidden: \(reason)\n")))
    }

    /// Only this app's own scripts and styles, never in a frame, never cached.
    static func secure(_ headers: inout HTTPFields) {
        headers[.contentSecurityPolicy] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        headers[.xContentTypeOptions] = "nosniff"
        headers[.referrerPolicy] = "no-referrer"
        headers[.cacheControl] = "no-store"
        headers[.frameOptions] = "DENY"
    }

}

extension HTTPField.Name {
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let frameOptions = HTTPField.Name("X-Frame-Options")!
}

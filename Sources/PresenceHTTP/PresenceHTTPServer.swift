import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Prometheus
import Q2Q
import ServiceLifecycle

/// The presence server's HTTP side for operators (`vertex server --http`): Prometheus
/// metrics at `/metrics`, a status page at `/` (and its data at `/status.json`).
public enum PresenceHTTPServer {
    /// Metrics that a registry collects: give `metrics` to the presence server's
    /// configuration, and `registry` to ``run(_:registry:host:port:logger:ready:)``.
    public static func makeMetrics() -> (metrics: PresenceMetrics, registry: PrometheusCollectorRegistry) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // From 100 µs (a cached answer) to 10 s (a listener slow to answer `inbound`).
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        return (PresenceMetrics(factory: factory), registry)
    }

    /// Serves until cancelled; `ready` is told the port (the one given, or the system's
    /// choice for 0). Bound to loopback, it answers only requests that name a loopback
    /// host (a page elsewhere cannot read it through DNS rebinding).
    public static func run(_ server: PresenceServer, registry: PrometheusCollectorRegistry, host: String, port: Int,
                           logger: Logger, ready: @escaping @Sendable (Int) -> Void) async throws {
        let router = Router()
        if ["127.0.0.1", "::1", "localhost"].contains(host) {
            router.add(middleware: LoopbackHostOnly())
        }
        router.get("/metrics") { _, _ in
            server.sampleGauges()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        router.get("/status.json") { _, _ in
            let data = (try? encoder.encode(server.status())) ?? Data("{}".utf8)
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        router.get("/") { _, _ in page(StatusPage.html, "text/html; charset=utf-8") }
        router.get("/status.js") { _, _ in page(StatusPage.script, "text/javascript; charset=utf-8") }
        router.get("/status.css") { _, _ in page(StatusPage.style, "text/css; charset=utf-8") }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let application = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
                                      onServerRunning: { ready($0.localAddress?.port ?? port) }, logger: quiet)
        let group = ServiceGroup(configuration: .init(services: [application], logger: quiet))
        // The group runs in a task of its own: cancelling us shuts it down gracefully.
        let running = Task { try await group.run() }
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static func page(_ text: String, _ type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-store",
                                        .contentSecurityPolicy: "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"],
                 body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Refuses requests whose `Host` is not a loopback name.
struct LoopbackHostOnly<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let authority = request.head.authority?.lowercased() ?? ""
        let host = authority.hasPrefix("[") ? String(authority.prefix { $0 != "]" }) + "]"
                                            : String(authority.prefix { $0 != ":" })
        guard ["127.0.0.1", "localhost", "[::1]"].contains(host) else {
            return Response(status: .forbidden, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: "403 forbidden: this page answers to loopback names only\n")))
        }
        return try await next(request, context)
    }
}

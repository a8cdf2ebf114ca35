import Foundation
import Hummingbird
import Locking
import Logging
import ServiceLifecycle

/// Serves a ``VertexApp``'s page on `host:port` until cancelled.
public enum AppWebServer {
    /// Runs the server; `ready` is told the port it listens on (the one given, or the
    /// one the system chose for 0). `extraHosts` are names besides loopback the page may
    /// be reached by (the address given to `--listen`).
    public static func run(_ app: VertexApp, host: String, port: Int, token: String, extraHosts: Set<String> = [],
                           logger: Logger, ready: @escaping @Sendable (Int) -> Void) async throws {
        let policy = Locked<AccessPolicy?>(nil)
        let router = Router()
        router.add(middleware: AccessGuard(policy: policy, logger: logger))
        AppRoutes.add(to: router, app: app)
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let application = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                policy.withLock { $0 = AccessPolicy(token: token, port: bound, hosts: AccessPolicy.loopbackHosts.union(extraHosts)) }
                ready(bound)
            },
            logger: quiet
        )
        // Cancelled (Ctrl-C in vertex app): the pages' event streams end, then the server
        // shuts down gracefully (requests in flight finish). The group runs in a task of
        // its own so that the cancellation does not reach it as such.
        let group = ServiceGroup(configuration: .init(services: [application], logger: quiet))
        let running = Task { try await group.run() }
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            app.closeEventStreams()
            Task { await group.triggerGracefulShutdown() }
        }
    }
}

import CoreMetrics
import Foundation
import PTCP

/// What a presence server counts and measures, for operators (Prometheus at
/// `vertex server --http`). Made from the factory the server is given — never the
/// process-wide `MetricsSystem` — and recording nothing by default.
///
/// Counters and histograms move as things happen; the gauges (sessions, listeners,
/// relayed channels) are read from the server's tables by ``PresenceServer/sampleGauges()``
/// just before each scrape.
public struct PresenceMetrics: Sendable {
    let sessions: Gauge
    let authenticatedSessions: Gauge
    let listeners: Gauge
    let relayChannels: Gauge
    let clusterPeersUp: Gauge
    let relayBytes: Counter
    let inboundAnswered: Counter
    let inboundNotFound: Counter
    let inboundRefused: Counter
    let inboundLatency: CoreMetrics.Timer
    let identify: Counter
    let signIssued: Counter
    let signRefused: Counter
    let rateLimited: [RateLimit: Counter]
    let databaseLatency: [String: CoreMetrics.Timer]

    /// Which limit turned a request away.
    public enum RateLimit: String, Sendable, CaseIterable {
        /// `inbound`s per caller (or relay offers per caller).
        case inbound
        /// Open registrations per source address.
        case registration
        /// Failed password checks per source, network or account.
        case sign
        /// Password checks running at once.
        case passwordChecks = "password_checks"
        /// Connections not yet authenticated, per source or in all.
        case unauthenticated
    }

    /// Store operations timed (``TimedPresenceStore``).
    static let databaseOperations = ["authority", "save_authority", "add_user", "remove_user", "users", "password_hash",
                                     "record_issued", "issued_certificates", "revoke", "is_revoked", "pinned_authority", "pin"]

    /// Metrics that go nowhere (the default).
    public static let none = PresenceMetrics(factory: NOOPMetricsHandler.instance)

    public init(factory: any MetricsFactory) {
        func gauge(_ name: String) -> Gauge { Gauge(label: name, dimensions: [], factory: factory) }
        func counter(_ name: String, _ dimensions: [(String, String)] = []) -> Counter {
            Counter(label: name, dimensions: dimensions, factory: factory)
        }
        sessions = gauge("vertex_presence_sessions")
        authenticatedSessions = gauge("vertex_presence_authenticated_sessions")
        listeners = gauge("vertex_presence_listeners")
        relayChannels = gauge("vertex_presence_relay_channels")
        clusterPeersUp = gauge("vertex_presence_cluster_peers_up")
        relayBytes = counter("vertex_presence_relay_bytes_total")
        inboundAnswered = counter("vertex_presence_inbound_total", [("result", "answered")])
        inboundNotFound = counter("vertex_presence_inbound_total", [("result", "not_listening")])
        inboundRefused = counter("vertex_presence_inbound_total", [("result", "refused")])
        inboundLatency = CoreMetrics.Timer(label: "vertex_presence_inbound_duration_seconds", dimensions: [], factory: factory)
        identify = counter("vertex_presence_identify_total")
        signIssued = counter("vertex_presence_sign_total", [("result", "issued")])
        signRefused = counter("vertex_presence_sign_total", [("result", "refused")])
        rateLimited = Dictionary(uniqueKeysWithValues: RateLimit.allCases.map {
            ($0, counter("vertex_presence_rate_limited_total", [("limit", $0.rawValue)]))
        })
        databaseLatency = Dictionary(uniqueKeysWithValues: Self.databaseOperations.map {
            ($0, CoreMetrics.Timer(label: "vertex_presence_database_duration_seconds", dimensions: [("operation", $0)], factory: factory))
        })
    }

    func limited(_ limit: RateLimit) { rateLimited[limit]?.increment() }

    /// Runs a store operation, timing it.
    func timed<T>(_ operation: String, _ body: () async throws -> T) async rethrows -> T {
        let start = ContinuousClock.now
        defer { databaseLatency[operation]?.recordNanoseconds((ContinuousClock.now - start).nanoseconds) }
        return try await body()
    }
}

import AMP
import Foundation
import Locking
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// How a presence server runs.
public struct PresenceServerConfiguration: Sendable {
    /// The domains this server is the presence server of; it answers `identify` for
    /// these only (the original minted a CA for any domain asked).
    public var domains: [String]
    /// The addresses to listen on (TCP, and UDP for address discovery), each family on
    /// its own socket; by default every address of both families (``everyAddress``).
    public var hosts: [String]
    /// The first address listened on (the one NAT behaviour tests answer from).
    public var host: String {
        get { hosts.first ?? "0.0.0.0" }
        set { hosts = [newValue] }
    }
    /// Every IPv4 and every IPv6 address. On a host without IPv6 the second is skipped.
    public static let everyAddress = ["0.0.0.0", "::"]
    /// 8788, as in the original; 0 picks a free port.
    public var port: Int
    /// How long the user certificates `sign` issues stay valid.
    public var certificateValidity: TimeInterval
    /// Whether anyone may create an account with `add_user` (over TLS, rate-limited
    /// per source IP). Off by default: the operator creates accounts.
    public var openRegistration: Bool
    /// Open registrations allowed per source IP: a burst, then this many an hour.
    public var registrationsPerHour: Int
    /// Failed `sign` attempts allowed per source IP: a burst, then this many an hour.
    public var failedSignsPerHour: Int
    /// How long a `listen` lasts unless renewed (nodes renew at a third of it).
    public var listenLifetime: TimeInterval
    /// How long the server waits for a listening node to answer a forwarded `inbound`.
    public var inboundTimeout: Duration
    /// Where other domains' presence servers are, for domains not found at DOMAIN:8788
    /// (their CAs are fetched from there, and pinned, when their users connect here).
    public var peerServers: [String: HostPort]
    /// Sees every body the relay forwards (for tests that check only ciphertext passes).
    public var relayObserver: (@Sendable (ByteBuffer) -> Void)?
    /// What bounds the relay: its memory budget, channels per connection and per
    /// caller, offers per caller.
    public var relayLimits: RelayLimits
    /// `inbound`s one caller may send: a burst, then this many an hour.
    public var inboundsPerHour: Int
    /// Services one `listen` may name, and nodes (connections) one address may listen on.
    public var maximumServicesPerListen: Int
    public var maximumListeningConnectionsPerAddress: Int
    /// Password checks (`sign`) the server runs at once; more are refused as busy
    /// (each costs 16 MiB and tens of milliseconds of a core).
    public var concurrentPasswordChecks: Int
    /// How long a connection may stay without authenticating as an address (`secure`
    /// with a certificate): long enough for `identify`, `register` or `whoami`, not for
    /// holding a descriptor (or a half-sent box) for good.
    public var unauthenticatedLifetime: Duration
    /// Whether the server answers address discovery on UDP, on the same port number as
    /// its TCP port (nodes behind NATs learn their public UDP mapping from it).
    public var udpEnabled: Bool
    /// The second UDP port NAT behaviour tests are answered from (`vertex doctor`);
    /// nil: the TCP port + 1, or any free port when that one is taken.
    public var alternateUDPPort: Int?
    /// A second address of this host, for the tests that tell how a NAT maps and filters
    /// towards another address (RFC 5780); the server's own `host` must then be an
    /// address too, not every interface.
    public var alternateAddress: String?
    /// How long a new connection may take to send its first complete box, and how long
    /// half a box may wait for the rest, before the connection is closed.
    public var firstBoxTimeout: Duration = .seconds(10)
    public var partialBoxTimeout: Duration = .seconds(10)
    /// Connections not yet authenticated as an address that the server holds at once,
    /// in all and from one source address; more are closed as they arrive (OpenSSH's
    /// `MaxStartups`). Registered listeners are authenticated and never count.
    public var maximumUnauthenticatedConnections = 4096
    public var maximumUnauthenticatedPerSource = 64
    /// Where the server's counters and histograms go (``PresenceMetrics``); nowhere by
    /// default.
    public var metrics: PresenceMetrics = .none
    /// This node's name among the domain's presence nodes (status page, membership).
    public var nodeName: String = ProcessInfo.processInfo.hostName

    public init(domains: [String], host: String? = nil, port: Int = 8788,
                certificateValidity: TimeInterval = 30 * 86_400, openRegistration: Bool = false,
                registrationsPerHour: Int = 5, failedSignsPerHour: Int = 60,
                listenLifetime: TimeInterval = 300, inboundTimeout: Duration = .seconds(5)) {
        self.domains = domains
        self.hosts = host.map { [$0] } ?? Self.everyAddress
        self.port = port
        self.certificateValidity = certificateValidity
        self.openRegistration = openRegistration
        self.registrationsPerHour = registrationsPerHour
        self.failedSignsPerHour = failedSignsPerHour
        self.listenLifetime = listenLifetime
        self.inboundTimeout = inboundTimeout
        self.relayObserver = nil
        self.peerServers = [:]
        self.relayLimits = RelayLimits()
        self.inboundsPerHour = 3600
        self.maximumServicesPerListen = 16
        self.maximumListeningConnectionsPerAddress = 16
        self.concurrentPasswordChecks = 2
        self.unauthenticatedLifetime = .seconds(30)
        self.udpEnabled = true
    }
}

/// A Vertex domain's presence server: it answers `identify` with the domain's CA,
/// switches connections to TLS with `secure` (verifying callers who claim an address),
/// issues certificates with `sign`, creates accounts with `add_user` when open
/// registration is on, and reflects addresses with `Who-Am-I` and `source-ip`.
public final class PresenceServer: Sendable {
    public let configuration: PresenceServerConfiguration
    let store: any PresenceStore
    let authorities: [String: DomainAuthority]
    let logger: Logger
    let group: any EventLoopGroup
    /// One AMP server and one address reflector per address listened on.
    private let servers: Locked<[AMPServer]> = Locked([])
    private let reflectors: Locked<[AddressReflector]> = Locked([])
    /// Proofs that address-discovery answers reached the addresses they name, checked
    /// when a caller's `inbound` names its UDP addresses.
    let addressProofs = AddressProofs()
    /// TLS contexts per (domain, whether the client is verified), made once: a context
    /// holds the certificate and key, and is shared by every connection.
    private let tlsContexts = Locked<[String: NIOSSLContext]>([:])
    /// Open connections, closed on shutdown.
    let connections = Locked<[ObjectIdentifier: AMPConnection]>([:])
    /// The open connections that authenticated as an address.
    private let authenticatedConnections = Locked<Set<ObjectIdentifier>>([])
    let registrations: Locked<RateLimiter>
    /// Failed `sign`s per source address, per source network (/24, /64) and per account.
    let failedSigns: Locked<RateLimiter>
    /// Password checks running now (``PresenceServerConfiguration/concurrentPasswordChecks``).
    let passwordChecks = Atomic<Int>(0)
    /// `inbound`s per caller address.
    let inbounds: Locked<RateLimiter>
    /// Other domains' CAs, learnt when their users first connect.
    let fetcher = AuthorityFetcher()
    /// New domains pinned (one bucket for all: every pin stays for good).
    let newPins = Locked(RateLimiter(burst: 100, perHour: 100))
    /// Connections not yet authenticated, in all and per source address.
    let unauthenticated = Locked(UnauthenticatedCount())
    let refusals = Locked((count: 0, lastLogged: ContinuousClock.now - .seconds(2)))
    let refusedInAll = Locked(0)
    /// `Check-Reachable`s, per address and per source /24 or /64: a few at once, one a minute.
    let reachabilityChecks = Locked(RateLimiter(burst: 5, perHour: 60))
    /// Purges expired listen registrations now and then (registrations no caller asks
    /// about would otherwise stay until their connection closes).
    private let purger: Locked<Task<Void, Never>?> = Locked(nil)
    let listeners: ListenerRegistry
    let relay: RelayTable
    var metrics: PresenceMetrics { configuration.metrics }
    /// The relay's forwarded bytes at the last sample (the counter moves by the difference).
    private let sampledRelayBytes = Locked(0)
    /// The newest problems worth an operator's look, for the status page.
    let problems = RecentProblems()
    /// The domain's other presence nodes that are up, as membership last found them.
    private let peers = Locked<[PresencePeer]>([])

    /// Tells the server which other presence nodes are up (membership, each heartbeat).
    public func setPeers(_ up: [PresencePeer]) { peers.withLock { $0 = up } }
    /// The next relay channel number per node connection (ours are negative there:
    /// the server accepted those connections).
    let relayNumbers = Locked<[ObjectIdentifier: Int]>([:])

    private init(configuration: PresenceServerConfiguration, store: any PresenceStore,
                 authorities: [String: DomainAuthority], group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.store = TimedPresenceStore(store: store, metrics: configuration.metrics)
        self.authorities = authorities
        self.logger = logger
        self.registrations = Locked(RateLimiter(burst: configuration.registrationsPerHour, perHour: configuration.registrationsPerHour))
        self.failedSigns = Locked(RateLimiter(burst: 10, perHour: configuration.failedSignsPerHour))
        self.listeners = ListenerRegistry(lifetime: configuration.listenLifetime,
                                          maximumServicesPerConnection: configuration.maximumServicesPerListen,
                                          maximumConnectionsPerAddress: configuration.maximumListeningConnectionsPerAddress)
        self.relay = RelayTable(limits: configuration.relayLimits, observer: configuration.relayObserver, logger: logger)
        self.inbounds = Locked(RateLimiter(burst: 60, perHour: configuration.inboundsPerHour))
    }

    /// Loads (or, on first start, creates) each domain's CA, then listens.
    public static func start(
        configuration: PresenceServerConfiguration,
        store: any PresenceStore,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "vertex.presence")
    ) async throws -> PresenceServer {
        guard !configuration.domains.isEmpty else { throw PresenceServerError("a presence server needs at least one --domain") }
        var authorities: [String: DomainAuthority] = [:]
        for name in configuration.domains {
            let domain: String
            do {
                domain = try Q2QAddress(resource: nil, domain: name).domain
            } catch {
                throw PresenceServerError("bad domain '\(name)': \(error)")
            }
            if let stored = try await store.authority(for: domain) {
                authorities[domain] = stored
            } else {
                authorities[domain] = try await store.saveAuthorityIfAbsent(try DomainAuthority.create(domain: domain))
                logger.notice("created the CA of \(domain)", metadata: ["fingerprint": "\(authorities[domain]!.certificate.fingerprint)"])
            }
        }
        let presence = PresenceServer(configuration: configuration, store: store, authorities: authorities, group: group, logger: logger)
        var limits = AMPLimits.default
        limits.firstBoxTimeout = configuration.firstBoxTimeout.secondsValue
        limits.partialBoxTimeout = configuration.partialBoxTimeout.secondsValue
        let servers = try await presence.bindServers(limits: limits)
        presence.servers.withLock { $0 = servers }
        presence.purger.withLock { [listeners = presence.listeners, lifetime = configuration.listenLifetime] in
            $0 = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(max(1, min(60, lifetime / 4))))
                    listeners.purge(now: Date())
                }
            }
        }
        if configuration.udpEnabled {
            await presence.bindReflectors(for: servers)
        }
        return presence
    }

    /// The first address the server listens on.
    public var localAddress: SocketAddress? { servers.withLock { $0.first?.localAddress } }

    /// Every address the server listens on (one per ``PresenceServerConfiguration/hosts``
    /// that could be bound).
    public var localAddresses: [SocketAddress] { servers.withLock { $0.compactMap(\.localAddress) } }

    /// The first UDP address that answers address discovery, when it runs.
    public var udpAddress: SocketAddress? { reflectors.withLock { $0.first?.localAddress } }

    /// Every UDP address that answers: address discovery on each family, and the
    /// sockets of NAT behaviour tests.
    public var udpAddresses: [SocketAddress] { reflectors.withLock { $0.flatMap(\.localAddresses) } }

    /// An AMP server on each of the configured addresses, all on one port (the first's,
    /// when the port is 0). The IPv6 wildcard beside the IPv4 one is skipped on a host
    /// without IPv6; any other address that cannot be bound is an error.
    private func bindServers(limits: AMPLimits) async throws -> [AMPServer] {
        var servers: [AMPServer] = []
        var port = configuration.port
        for host in configuration.hosts {
            do {
                let server = try await AMPServer.bind(
                    host: host, port: port, limits: limits, group: group, logger: logger,
                    respondersForConnection: { [self] in responders(for: PresenceSession()) },
                    onConnection: { [self] connection in track(connection) })
                port = server.port ?? port
                servers.append(server)
            } catch where host == "::" && configuration.hosts.contains("0.0.0.0") {
                logger.info("not listening on IPv6: \(error)")
            } catch {
                for server in servers { await server.close() }
                throw error
            }
        }
        return servers
    }

    /// Address discovery on UDP beside each server, on its port. NAT behaviour tests
    /// (a second port, a second address) are answered on the first address only.
    ///
    /// The IPv6 wildcard is bound address by address: a UDP socket on `::` answers from
    /// whichever address the kernel prefers towards the asker (on a host with two, often
    /// not the one asked), and the asker's firewall drops an answer from an address it
    /// never sent to. (TCP has no such problem: a connection keeps its address.)
    private func bindReflectors(for servers: [AMPServer]) async {
        for (index, server) in servers.enumerated() {
            guard let port = server.port, let bound = server.localAddress?.ipAddress else { continue }
            let first = index == 0
            let hosts = bound == AddressFamily.v6.wildcard ? LocalAddresses.ipv6(includingUniqueLocal: true) + ["::1"] : [bound]
            for host in hosts {
                await bindReflector(host: host, port: port, first: first)
            }
        }
    }

    private func bindReflector(host: String, port: Int, first: Bool) async {
        let alternatePort = first ? configuration.alternateUDPPort ?? port + 1 : nil
        let alternateAddress = first ? configuration.alternateAddress : nil
        do {
            let reflector: AddressReflector
            do {
                reflector = try await AddressReflector.bind(host: host, port: port, alternatePort: alternatePort, alternateAddress: alternateAddress,
                                                            proofs: addressProofs, group: group, logger: logger)
            } catch where first && configuration.alternateUDPPort == nil && configuration.alternateAddress == nil {
                // The port after ours is taken: any free one serves the NAT tests as well.
                logger.notice("UDP port \(port + 1) is taken; NAT behaviour tests answer from another", metadata: ["error": "\(error)"])
                reflector = try await AddressReflector.bind(host: host, port: port, alternatePort: 0, alternateAddress: nil,
                                                            proofs: addressProofs, group: group, logger: logger)
            }
            reflectors.withLock { $0.append(reflector) }
        } catch {
            logger.warning("no address discovery on UDP \(host) port \(port): \(error); nodes behind NATs will use tcp and the relay")
        }
    }

    /// The CA of `domain`, if served here.
    public func authority(for domain: String) -> DomainAuthority? { authorities[domain.lowercased()] }

    /// The CA to verify `domain`'s users against: ours for our domains; for another
    /// domain the pinned one, or on first contact the one its presence server gives,
    /// which is then pinned.
    func authority(forUsersOf domain: String) async throws -> Q2QCertificate {
        if let own = authority(for: domain) { return own.certificate }
        if let pinned = try await store.pinnedAuthority(for: domain) { return pinned }
        // Every new domain seen in `secure` would be pinned for good: a few an hour.
        guard newPins.withLock({ $0.allow("pins", now: Date()) }) else {
            throw PresenceServerError("too many new domains to learn; try again later")
        }
        let explicit = configuration.peerServers[domain]
        let server = explicit ?? HostPort(host: domain, port: PresenceClient.defaultPort)
        let certificate = try await fetcher.fetch(domain, from: server, explicit: explicit != nil, group: group, logger: logger)
        try await store.pin(certificate, for: domain, now: Date())
        logger.notice("pinned the CA of \(domain)", metadata: ["fingerprint": "\(certificate.fingerprint)", "from": "\(server)"])
        return certificate
    }

    func tlsContext(for authority: DomainAuthority, verifyingPeer: Bool) throws -> NIOSSLContext {
        let key = "\(authority.domain)|\(verifyingPeer)"
        return try tlsContexts.withLock { contexts in
            if let context = contexts[key] { return context }
            let configuration = try Q2QIdentity(authority: authority).tlsConfiguration(server: true, verifyingPeer: verifyingPeer)
            let context = try NIOSSLContext(configuration: configuration)
            contexts[key] = context
            return context
        }
    }

    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 512 * 1024, high: 2 * 1024 * 1024)

    /// How many relayed channels are open.
    public var relayedChannelCount: Int { relay.count }

    /// How many listen registrations are live.
    public var listenerCount: Int { listeners.count }

    /// What the relay has forwarded and refused.
    public var relayStatistics: RelayStatistics { relay.statistics }

    /// Bytes of flow-control windows the open relayed channels reserve (at most
    /// ``RelayLimits/budget``).
    public var relayReservedBytes: Int { relay.reservedBytes }

    private func track(_ connection: AMPConnection) {
        let source = connection.remoteAddress?.ipAddress ?? "?"
        guard unauthenticated.withLock({ $0.admit(source, total: configuration.maximumUnauthenticatedConnections,
                                                  perSource: configuration.maximumUnauthenticatedPerSource) }) else {
            refusedUnauthenticated(from: source)
            connection.channel.close(promise: nil)
            return
        }
        // Room for relayed streams: NIO's default 64 KiB high-water mark would make the
        // relay pause a sender at every few boxes.
        connection.channel.setOption(ChannelOptions.writeBufferWaterMark, value: Self.writeBufferWaterMark).whenFailure { _ in }
        let id = ObjectIdentifier(connection)
        connections.withLock { $0[id] = connection }
        let deadline = connection.channel.eventLoop.scheduleTask(in: TimeAmount(configuration.unauthenticatedLifetime)) { [self] in
            guard !authenticatedConnections.withLock({ $0.contains(id) }) else { return }
            logger.debug("closing a connection that did not authenticate in time",
                         metadata: ["peer": "\(connection.remoteAddress.map { "\($0)" } ?? "?")"])
            connection.channel.close(promise: nil)
        }
        connection.channel.closeFuture.whenComplete { [self] _ in
            deadline.cancel()
            if authenticatedConnections.withLock({ $0.remove(id) }) == nil {
                unauthenticated.withLock { $0.release(source) }
            }
            _ = connections.withLock { $0.removeValue(forKey: id) }
            _ = relayNumbers.withLock { $0.removeValue(forKey: id) }
            relay.connectionClosed(connection)
        }
    }

    /// `connection` authenticated as an address: it may stay open.
    func markAuthenticated(_ connection: AMPConnection) {
        let id = ObjectIdentifier(connection)
        // Only while it is open (its close removes it).
        let source = connection.remoteAddress?.ipAddress ?? "?"
        connections.withLock { connections in
            guard connections[id] != nil else { return }
            if authenticatedConnections.withLock({ $0.insert(id).inserted }) {
                unauthenticated.withLock { $0.release(source) }
            }
        }
    }

    /// One log line a second at most for connections refused by the caps, with how many.
    private func refusedUnauthenticated(from source: String) {
        refusedInAll.withLock { $0 += 1 }
        metrics.limited(.unauthenticated)
        let report = refusals.withLock { refusals -> Int? in
            refusals.count += 1
            let now = ContinuousClock.now
            guard now - refusals.lastLogged >= .seconds(1) else { return nil }
            refusals.lastLogged = now
            defer { refusals.count = 0 }
            return refusals.count
        }
        if let count = report {
            problems.add("refused \(count) connection(s) not yet authenticated (from \(source) last)")
            logger.warning("refusing connections: too many not yet authenticated",
                           metadata: ["source": "\(source)", "refused": "\(count)",
                                      "caps": "\(configuration.maximumUnauthenticatedConnections) in all, \(configuration.maximumUnauthenticatedPerSource) per source"])
        }
    }

    /// Sets the gauges from the server's tables, and moves the relay's byte counter on
    /// by what it forwarded since the last sample: called before each scrape.
    public func sampleGauges() {
        metrics.sessions.record(connections.withLock { $0.count })
        metrics.authenticatedSessions.record(authenticatedConnections.withLock { $0.count })
        metrics.listeners.record(listeners.count)
        metrics.relayChannels.record(relay.count)
        metrics.clusterPeersUp.record(peers.withLock { $0.count })
        let forwarded = relay.statistics.forwardedBytes
        let delta = sampledRelayBytes.withLock { sampled in
            defer { sampled = forwarded }
            return forwarded - sampled
        }
        if delta > 0 { metrics.relayBytes.increment(by: delta) }
    }

    /// What the status page shows of this node, now.
    public func status() -> PresenceStatus {
        PresenceStatus(node: configuration.nodeName, domains: authorities.keys.sorted(),
                       addresses: localAddresses.compactMap { HostPort($0)?.description },
                       sessions: connections.withLock { $0.count },
                       authenticatedSessions: authenticatedConnections.withLock { $0.count },
                       listeners: listeners.count, relayChannels: relay.count,
                       relayedBytes: relay.statistics.forwardedBytes, peers: peers.withLock { $0 }, problems: problems.list())
    }

    /// Connections refused by the caps on unauthenticated connections since the start.
    public var unauthenticatedRefusals: Int { refusedInAll.withLock { $0 } }

    /// Stops listening and closes every connection.
    public func close() async {
        purger.withLock { $0 }?.cancel()
        for server in servers.withLock({ $0 }) { await server.close() }
        for reflector in reflectors.withLock({ $0 }) { await reflector.close() }
        for connection in connections.withLock({ Array($0.values) }) {
            await connection.close()
        }
    }
}

/// A presence server that cannot start.
public struct PresenceServerError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Connections a presence server holds that have not authenticated as an address.
struct UnauthenticatedCount {
    private(set) var total = 0
    private var perSource: [String: Int] = [:]

    /// Counts one from `source`, unless that would pass a cap.
    mutating func admit(_ source: String, total cap: Int, perSource sourceCap: Int) -> Bool {
        guard total < cap, perSource[source, default: 0] < sourceCap else { return false }
        total += 1
        perSource[source, default: 0] += 1
        return true
    }

    mutating func release(_ source: String) {
        guard let count = perSource[source] else { return }
        total -= 1
        perSource[source] = count > 1 ? count - 1 : nil
    }
}

extension Duration {
    /// Seconds as a floating-point number.
    package var secondsValue: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

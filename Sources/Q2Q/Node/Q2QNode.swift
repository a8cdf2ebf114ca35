import AMP
import Foundation
import Locking
import Logging
import NIOCore
import NIOPosix

/// How a node listens and connects.
public struct Q2QNodeConfiguration: Sendable {
    /// Where direct (`tcp@`) ports are bound; `0.0.0.0` (or `::`) listens on every
    /// interface, of both families (IPv6 on sockets of its own: ``ipv6``).
    public var listenHost: String
    /// Hosts to publish in `tcp@` methods instead of the automatic choice (the bound
    /// host, or when that is unspecified, our side of the presence connection).
    public var publishedHosts: [String]?
    /// Delay between starting one connection method and the next (Happy Eyeballs).
    public var stagger: Duration
    /// Longest wait between attempts to reach a presence server again.
    public var maximumBackoff: Duration
    /// How often listen registrations are renewed (the server lets them lapse after 300 s).
    public var renewInterval: Duration

    /// The window this node grants per relayed channel it receives on (``ChannelWindow``).
    public var relayWindow: Int
    /// Whether the node offers and tries PTCP paths (`ptcp@`, `rptcp@`): UDP ports,
    /// address discovery with presence servers, hole punching.
    public var udpEnabled: Bool
    /// How often a listener asks its presence server for its UDP mapping again (which
    /// also keeps its NAT's mapping open: conntrack forgets idle UDP after 30–120 s).
    public var mappingRefreshInterval: Duration
    /// Whether a `tcp@` path that won is dialled again at once on the next connection
    /// to the same address and service, beside the question to the presence server.
    public var remembersPaths: Bool = true
    /// How long an incoming path (direct, PTCP or relayed) may take from its first byte
    /// to an accepted claim (TLS and `Retrieve-Connection`) before it is closed: a caller
    /// that connects and says nothing holds no descriptor or relay slot for long.
    public var pathClaimTimeout: Duration = .seconds(10)
    /// How long a cached AMP connection (``Q2QNode/withAMPConnection(from:to:service:methods:_:)``)
    /// stays open with nobody using it.
    public var ampIdleTimeout: Duration = .seconds(60)
    /// How long a `ptcp@` attempt waits when the same listener offers a `tcp@` path on
    /// one of our links (loopback, our LAN). There both work, their handshakes finish
    /// within a millisecond of each other, and kernel TCP should win: PTCP costs more CPU
    /// per byte. Towards a listener elsewhere PTCP does not wait: its `tcp@` paths are
    /// behind a NAT or firewall more often than not (a public listener's `tcp@` path
    /// starts a round trip earlier anyway, from `direct-paths`).
    public var tcpHeadStart: Duration = .milliseconds(50)
    /// Whether listeners ask the home gateway (PCP, else NAT-PMP) to map their UDP and
    /// TCP ports, and offer the mapped public addresses. It runs beside listening and
    /// adds no delay where no gateway answers. Not done when the node listens only on
    /// loopback or reaches its presence server over loopback: no peer beyond a gateway
    /// could use the mapping then (and local tests never ask a real router).
    public var portMapping: Bool = true
    /// The lifetime asked for each mapping (renewed at half of what the gateway grants).
    public var portMappingLifetime: Duration = .seconds(7200)
    /// The longest time between renewals, which is how a changed public address or a
    /// gateway that restarted is noticed.
    public var portMappingRefresh: Duration = .seconds(60)
    /// The gateway's port-mapping address instead of the default route's gateway at
    /// port 5351; a gateway named here is asked even over loopback.
    public var portMappingGateway: HostPort?
    /// Whether listeners that listen on every interface also offer `tcp@` and `ptcp@`
    /// paths on this host's global IPv6 addresses, and connections try them. There is
    /// no NAT on IPv6, only firewalls, which a UDP hole punch opens: two hosts behind
    /// IPv4 NATs that defeat punching usually still meet directly over IPv6.
    public var ipv6: Bool = true
    /// Whether unique local IPv6 addresses (fc00::/7, one organisation's) are offered too.
    public var ipv6UniqueLocal: Bool = false
    /// How long IPv4 attempts wait behind IPv6 ones of the same wave (Happy Eyeballs,
    /// RFC 8305): where both work IPv6 wins, and a broken IPv6 path costs IPv4 no more
    /// than this.
    public var ipv6HeadStart: Duration = .milliseconds(50)

    public init(listenHost: String = "0.0.0.0", publishedHosts: [String]? = nil, stagger: Duration = .milliseconds(250),
                maximumBackoff: Duration = .seconds(2), renewInterval: Duration = .seconds(100),
                relayWindow: Int = ChannelWindow.defaultSize, udpEnabled: Bool = true,
                mappingRefreshInterval: Duration = .seconds(20)) {
        self.relayWindow = relayWindow
        self.udpEnabled = udpEnabled
        self.mappingRefreshInterval = mappingRefreshInterval
        self.listenHost = listenHost
        self.publishedHosts = publishedHosts
        self.stagger = stagger
        self.maximumBackoff = maximumBackoff
        self.renewInterval = renewInterval
    }
}

/// A user's Vertex: its identities and pins (a ``NodeStore``), a cache of secured
/// connections to presence servers, and the listeners and connections it makes.
///
/// ```swift
/// let node = try Q2QNode(home: SQLiteNodeStore.homeDirectory())
/// let listener = try await node.listen(as: bob, service: "echo")
/// for await stream in listener.connections { … }        // on bob's side
/// let stream = try await node.connect(from: alice, to: bob, service: "echo")   // on alice's
/// ```
public final class Q2QNode: Sendable {
    public let store: any NodeStore
    public let configuration: Q2QNodeConfiguration
    /// The event loops its connections run on (apps may run their own state there too).
    public var eventLoopGroup: any EventLoopGroup { group }
    let client: PresenceClient
    let fetcher = AuthorityFetcher()
    let group: any EventLoopGroup
    let logger: Logger
    private let links = PresenceLinks()
    let udp = NodeUDP()
    private let listeners = Locked<[ListenerKey: Q2QListener]>([:])
    /// The virtual channels of each presence connection.
    private let multiplexers = Locked<[ObjectIdentifier: VirtualChannelMultiplexer]>([:])
    /// The `tcp@` path that last won for each (from, to, service), tried first next time.
    private let rememberedPaths = Locked<[RememberedPathKey: HostPort]>([:])
    /// One AMP connection per (local, peer, service), shared by every caller.
    let ampConnections: AMPConnectionCache
    /// The responders of each AMP listener (``serveAMP``), also used on the connections
    /// this node opens as that address to that service.
    let ampResponders = Locked<[ListenerKey: @Sendable (Q2QAddress) -> AMPResponders]>([:])
    /// Asks the home gateway for mappings of listeners' ports (nil when turned off).
    let portMapper: PortMapper?

    /// The `tcp@` path a connection from `from` to `to`'s `service` tries first.
    func rememberedPath(from: Q2QAddress, to: Q2QAddress, service: String) -> HostPort? {
        rememberedPaths.withLock { $0[RememberedPathKey(from: from, to: to, service: service)] }
    }

    struct RememberedPathKey: Hashable {
        var from: Q2QAddress
        var to: Q2QAddress
        var service: String
    }

    struct ListenerKey: Hashable {
        var address: Q2QAddress
        var service: String
    }

    public init(store: any NodeStore, configuration: Q2QNodeConfiguration = .init(),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "vertex.node")) {
        self.store = store
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.client = PresenceClient(store: store, group: group, logger: logger)
        self.ampConnections = AMPConnectionCache(idleTimeout: configuration.ampIdleTimeout)
        self.portMapper = configuration.portMapping
            ? PortMapper(gateway: configuration.portMappingGateway, group: group, logger: logger) : nil
    }

    public convenience init(home: URL, configuration: Q2QNodeConfiguration = .init()) throws {
        self.init(store: try SQLiteNodeStore(home: home), configuration: configuration)
    }

    /// The CA of `domain`, a domain this node acts on (it connects there): the pinned
    /// one, or on first contact the one its presence server gives (then pinned).
    func authority(for domain: String) async -> Q2QCertificate? {
        if let pinned = try? await store.pinnedAuthority(for: domain) { return pinned }
        do {
            let explicit = try await store.server(for: domain)
            let server = try await client.server(for: domain, explicit: explicit)
            let certificate = try await fetcher.fetch(domain, from: server, explicit: explicit != nil, group: group, logger: logger)
            try await store.pin(certificate, for: domain, now: Date())
            return certificate
        } catch {
            logger.notice("cannot learn the CA of \(domain)", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The CA of a domain whose user connects to one of our listeners: only a pinned
    /// one, never fetched because a stranger's handshake names that domain (review
    /// M10). Our presence server passes it with the `inbound` that announces the caller;
    /// a path that races ahead of that `inbound` waits for it a little.
    func callerAuthority(for domain: String, waitingUpTo patience: Duration = .seconds(2)) async -> Q2QCertificate? {
        let deadline = ContinuousClock.now + patience
        while true {
            if let pinned = try? await store.pinnedAuthority(for: domain) { return pinned }
            guard ContinuousClock.now < deadline else { return nil }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Pins the CA our presence server verified a caller with, for a domain not pinned
    /// yet (a pin already there stays: pins are never replaced silently).
    private func learnCallerAuthority(_ certificate: Q2QCertificate?, of domain: String) async {
        guard let certificate, (try? await store.pinnedAuthority(for: domain)) == nil else { return }
        do {
            try PresenceClient.checkAuthority(certificate, of: domain)
            try await store.pin(certificate, for: domain, now: Date())
            logger.info("pinned the CA of \(domain) as our presence server gave it", metadata: ["fingerprint": "\(certificate.fingerprint)"])
        } catch {
            logger.notice("a caller's CA from our presence server is not usable", metadata: ["domain": "\(domain)", "error": "\(error)"])
        }
    }

    func identity(_ address: Q2QAddress) async throws -> Q2QIdentity {
        guard let identity = try await store.identity(for: address) else {
            throw Q2QNodeError("no identity for \(address) here; get one with 'vertex register \(address)'")
        }
        return identity
    }

    // MARK: Presence connections

    /// The secured connection to `domain`'s presence server as `identity` (cached).
    func link(as identity: Q2QIdentity, to domain: String) async throws -> AMPConnection {
        try await links.connection(for: "\(identity.address) → \(domain)") { [self] in
            var responders = AMPResponders()
            // Our listeners are reached through the link they registered on: their own
            // domain's presence server, as that identity. Any other link (one opened to
            // reach a peer's domain) answers nothing for them (review M6).
            let carriesListeners = domain == identity.address.domain
            let owner = identity.address
            let notHere: @Sendable (String) -> ConnectionError = { what in ConnectionError.notFound("\(what): this connection carries no listeners of that address") }
            responders.register(Inbound.self) { [self] arguments, context in
                guard carriesListeners, arguments.to == owner else { throw notHere("inbound for \(arguments.to)") }
                return try await answerInbound(arguments, on: context.connection)
            }
            responders.registerImmediate(Virtual.self) { [self] arguments, context in
                guard carriesListeners else { throw notHere("virtual") }
                return try acceptRelayed(arguments, for: owner, on: context.connection)
            }
            responders.registerImmediate(BindUDP.self) { [self] arguments, _ in
                guard carriesListeners, arguments.q2qsrc == owner else { throw notHere("bind-udp for \(arguments.q2qsrc)") }
                let key = ListenerKey(address: arguments.q2qsrc, service: arguments.service)
                return try answerBindUDP(arguments, listener: listeners.withLock { $0[key] })
            }
            responders.registerImmediate(Write.self) { [self] arguments, context in
                multiplexer(for: context.connection).receivedWrite(arguments.id, arguments.body.buffer)
                return AMPEmpty()
            }
            responders.registerImmediate(Close.self) { [self] arguments, context in
                multiplexer(for: context.connection).receivedClose(arguments.id)
                return AMPEmpty()
            }
            responders.registerImmediate(Credit.self) { [self] arguments, context in
                multiplexer(for: context.connection).receivedCredit(arguments.id, bytes: arguments.bytes)
                return AMPEmpty()
            }
            responders.registerImmediate(Choke.self) { [self] arguments, context in
                multiplexer(for: context.connection).receivedChoke(arguments.id, choked: true)
                return AMPEmpty()
            }
            responders.registerImmediate(Unchoke.self) { [self] arguments, context in
                multiplexer(for: context.connection).receivedChoke(arguments.id, choked: false)
                return AMPEmpty()
            }
            let server = try await client.server(for: domain)
            // A server that accepts and then says nothing must not hold a connect for good (review L8).
            do {
                return try await withTimeout(Self.presenceCallTimeout, "connecting to the presence server of \(domain)") { [client, responders] in
                    try await client.withNewConnection(to: server, responders: responders) { connection in
                        try await connection.channel.setOption(ChannelOptions.writeBufferWaterMark, value: PresenceServer.writeBufferWaterMark).get()
                        let authority = try await client.identify(domain, on: connection)
                        try await client.secure(connection, domain: domain, authority: authority, as: identity)
                    }
                }
            } catch {
                // Which server, why that one, and how to change it.
                throw await client.explained(error, for: domain)
            }
        }
    }

    /// The longest a node waits for a presence server: to connect and secure, or to
    /// answer a call (`inbound` waits for the listener, which has 5 s at the server).
    static let presenceCallTimeout: Duration = .seconds(20)

    /// `command` on a presence connection, given up after ``presenceCallTimeout``: a
    /// server that accepts and then says nothing must not hold a node for good (review L8).
    private func callServer<Command: AMPCommand>(_ connection: AMPConnection, _ command: Command.Type,
                                                 _ arguments: Command.Arguments) async throws -> Command.Response {
        try await withTimeout(Self.presenceCallTimeout, "\(Command.name) at the presence server") {
            try await connection.call(command, arguments)
        }
    }

    /// The multiplexer of a presence connection (made on first use; its channels close
    /// with the connection).
    func multiplexer(for connection: AMPConnection) -> VirtualChannelMultiplexer {
        let id = ObjectIdentifier(connection)
        let (multiplexer, isNew) = multiplexers.withLock { multiplexers in
            if let existing = multiplexers[id] { return (existing, false) }
            let made = VirtualChannelMultiplexer(connection: connection, madeTheConnection: true)
            multiplexers[id] = made
            return (made, true)
        }
        if isNew {
            connection.channel.closeFuture.whenComplete { [self] _ in
                multiplexer.connectionClosed()
                _ = multiplexers.withLock { $0.removeValue(forKey: id) }
            }
        }
        return multiplexer
    }

    /// The flow-control state of every relayed channel this node has (for diagnosing a stall).
    func relayedChannelFlows() async -> [String] {
        var lines: [String] = []
        for multiplexer in multiplexers.withLock({ Array($0.values) }) {
            lines += (try? await multiplexer.flowDescriptions().get()) ?? []
        }
        return lines
    }

    /// The presence server relays a channel to one of our listeners: `id` is the
    /// server's, `listener` an id we offered. The channel then runs ``PathHandshake``.
    private func acceptRelayed(_ arguments: Virtual.Arguments, for owner: Q2QAddress, on connection: AMPConnection) throws -> Virtual.Response {
        guard let listenerID = arguments.listenerID,
              let listener = listeners.withLock({ $0.values.first { $0.address == owner && $0.hasPendingClaim(listenerID) } }) else {
            throw ConnectionError.notFound("no listener here offered '\(arguments.listenerID?.prefix(64) ?? "")'")
        }
        guard let sendCredit = arguments.window, ChannelWindow.isValid(sendCredit) else {
            throw ConnectionError.notFound("a relayed channel needs a window of 1 to \(ChannelWindow.maximumCredit) bytes")
        }
        let mux = multiplexer(for: connection)
        let window = configuration.relayWindow
        guard let channel = mux.acceptChannel(id: arguments.id, receiveWindow: window) else {
            throw ConnectionError.notFound("virtual channel id \(arguments.id) is not a free id of the server's")
        }
        do {
            try PathHandshake.installAcceptor(on: channel, for: listener, tls: try listener.tlsContext(), logger: logger)
        } catch {
            channel.remoteClosed()
            throw error
        }
        channel.activate(sendCredit: sendCredit)
        return Virtual.Response(window: window)
    }

    /// The relay attempt: a virtual channel through the presence server to the node
    /// that offered the id, then ``PathHandshake``.
    private func dialRelayed(over connection: AMPConnection, listener ticket: ListenerClaim, as identity: Q2QIdentity,
                             peer: Q2QAddress, authority: Q2QCertificate, service: String) async throws -> Q2QPath {
        let mux = multiplexer(for: connection)
        let window = configuration.relayWindow
        let channel = try await connection.channel.eventLoop.submit { mux.makeChannel(receiveWindow: window) }.get()
        return try await withTaskCancellationHandler {
            let sendCredit: Int
            do {
                let answer = try await callServer(connection, Virtual.self, .init(id: channel.id, listener: ticket.id, window: window))
                guard let granted = answer.window, ChannelWindow.isValid(granted) else {
                    throw ConnectionError.notFound("the presence server relayed without a flow-control window")
                }
                sendCredit = granted
            } catch {
                channel.eventLoop.execute { channel.remoteClosed() }
                throw error
            }
            try await channel.eventLoop.submit { channel.activate(sendCredit: sendCredit) }.get()
            return try await PathHandshake.claim(on: channel, as: identity, peer: peer, authority: authority,
                                                 listener: { ticket }, service: service, method: .virtual, logger: logger)
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    // MARK: Listening

    /// Listens as `address` for `service`: opens a direct port, registers with the
    /// address's presence server, and keeps the registration alive (renewing it, and
    /// registering again after the connection to the server is lost).
    ///
    /// `authorize`, when given, decides for each caller (its address as its presence
    /// server verified it) whether it gets an offer at all; those it refuses are told
    /// so and never reach ``Q2QListener/connections``.
    public func listen(as address: Q2QAddress, service: String, description: String = "",
                       authorize: (@Sendable (Q2QAddress) async -> Bool)? = nil) async throws -> Q2QListener {
        try await listen(as: address, service: service, description: description, authorize: authorize, adoption: .bytes)
    }

    /// ``listen(as:service:description:authorize:)``, with each claimed path adopted as
    /// `adoption` says; AMP paths are handed to `adopted`.
    func listen(as address: Q2QAddress, service: String, description: String, authorize: (@Sendable (Q2QAddress) async -> Bool)?,
                adoption: PathAdoption, adopted: (@Sendable (Q2QPath) -> Void)? = nil) async throws -> Q2QListener {
        let identity = try await identity(address)
        let key = ListenerKey(address: address, service: service)
        let listener = Q2QListener(identity: identity, service: service, description: description, node: self, authorize: authorize,
                                   adoption: adoption, adopted: adopted)
        let added = listeners.withLock { listeners in
            guard listeners[key] == nil else { return false }
            listeners[key] = listener
            return true
        }
        guard added else {
            throw Q2QNodeError("this node already listens as \(address) for '\(service)'")
        }
        do {
            let acceptor = try await DirectPaths.bindAcceptor(host: ipv4ListenHost, port: 0, listener: listener,
                                                              group: group, logger: logger)
            listener.attach(acceptor: acceptor)
            await startIPv6(for: listener)
            // The UDP mapping is learnt while the registration goes on (one round trip
            // to the same server, so it is usually known before anyone can ask).
            await startUDP(for: listener)
            let connection = try await register(listener)
            let supervisor = Task { [self] in await keepRegistered(listener, connection: connection) }
            listener.attach(supervisor: supervisor)
            startPortMapping(for: listener, reachingServerFrom: connection.localAddress)
            return listener
        } catch {
            forget(listener)
            throw error
        }
    }

    /// The listener's UDP port for PTCP paths, and a task that learns its mapping from
    /// our presence server now and every `mappingRefreshInterval`. Without an answer
    /// (UDP blocked) the listener offers no PTCP paths until one comes.
    private func startUDP(for listener: Q2QListener) async {
        guard configuration.udpEnabled else { return }
        let port: UDPPort
        do {
            port = try await bindUDP(host: ipv4ListenHost, for: listener)
        } catch {
            logger.notice("no UDP port for PTCP paths", metadata: ["address": "\(listener.address)", "error": "\(error)"])
            return
        }
        let mapper = Task { [self, interval = configuration.mappingRefreshInterval] in
            while !Task.isCancelled {
                listener.setMapping(await discoverMapping(of: port, for: listener.address.domain)?.address)
                try? await Task.sleep(for: interval)
            }
        }
        listener.attach(udp: port, mapper: mapper)
        if listener.isClosed { await listener.close() }
    }

    /// A UDP port on `host` for `listener`'s PTCP paths: every connection that arrives
    /// on it runs the listener's side of ``PathHandshake``.
    func bindUDP(host: String, for listener: Q2QListener) async throws -> UDPPort {
        let tls = try listener.tlsContext()
        return try await UDPPort.bind(host: host, group: group, accepting: { [logger] channel in
            channel.eventLoop.makeCompletedFuture {
                try PathHandshake.installAcceptor(on: channel, for: listener, tls: tls, logger: logger)
            }
        })
    }

    private func discoverMapping(of port: UDPPort, for domain: String) async -> DiscoveredAddress? {
        guard let server = try? await client.server(for: domain), let address = server.socketAddresses(family: .v4).first else { return nil }
        return await port.discoverMapping(via: address)
    }

    /// `listen` for `listener`, with its `tcp@` paths for callers to start on early.
    func listenArguments(for listener: Q2QListener, on connection: AMPConnection) -> Listen.Arguments {
        var direct = listener.port.map { port in publishedHosts(seenOn: connection).map { Q2QMethod.tcp(HostPort(host: $0, port: port)) } }
        if let mapped = listener.portMapped(.tcp), direct?.contains(.tcp(mapped)) == false { direct?.append(.tcp(mapped)) }
        if let port6 = listener.port6 { direct = offeredIPv6Hosts.map { .tcp(HostPort(host: $0, port: port6)) } + (direct ?? []) }
        return Listen.Arguments(from: listener.address, protocols: [listener.service], description: listener.description,
                                direct: direct)
    }

    private func register(_ listener: Q2QListener) async throws -> AMPConnection {
        let connection = try await link(as: listener.identity, to: listener.address.domain)
        do {
            _ = try await callServer(connection, Listen.self, listenArguments(for: listener, on: connection))
        } catch let error as PresenceError {
            throw Q2QNodeError("the presence server of \(listener.address.domain) refused listen: \(error.errorDescription)")
        }
        return connection
    }

    /// Sends `listen` again every renewal interval until cancelled; gives the connection
    /// up (closes it) when a renewal gets no answer in time.
    private func renew(_ listener: Q2QListener, on connection: AMPConnection) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.renewInterval)
            } catch {
                return
            }
            let arguments = listenArguments(for: listener, on: connection)
            do {
                _ = try await withTimeout(renewalTimeout, "renewing a listen registration") {
                    try await connection.call(Listen.self, arguments)
                }
            } catch is Q2QTimeoutError {
                // No answer at all: the connection may be dead with no close ever reaching
                // us (a NAT that forgot its mapping, a server host that vanished). Waiting
                // on it would leave the listener unreachable for good; closing it makes
                // the caller register again on a new one.
                logger.notice("the presence server did not answer a renewal; connecting again",
                              metadata: ["address": "\(listener.address)"])
                await connection.close()
                return
            } catch {
                // Refused, or the connection closed (the caller sees that): try again later.
            }
        }
    }

    /// How long a renewal may wait for its answer before the connection is given up:
    /// the renewal interval, within 5–30 s.
    private var renewalTimeout: Duration {
        max(.seconds(5), min(configuration.renewInterval, .seconds(30)))
    }

    /// Renews the registration, and registers again (with backoff) whenever the
    /// connection to the presence server is lost or stops answering, until the
    /// listener closes.
    private func keepRegistered(_ listener: Q2QListener, connection first: AMPConnection) async {
        var connection: AMPConnection? = first
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled, !listener.isClosed {
            if let current = connection {
                // Renew until the connection closes (or is given up): one wait for the
                // close per connection, not one per renewal.
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await current.waitUntilClosed() }
                    group.addTask { await self.renew(listener, on: current) }
                    _ = await group.next()
                    group.cancelAll()
                }
                if Task.isCancelled { return }
                connection = nil
                logger.info("lost the presence server; registering again", metadata: ["address": "\(listener.address)"])
            }
            do {
                connection = try await register(listener)
                backoff = .milliseconds(100)
                logger.info("listening again", metadata: ["address": "\(listener.address)", "service": "\(listener.service)"])
            } catch {
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maximumBackoff)
            }
        }
    }

    func forget(_ listener: Q2QListener) {
        listeners.withLock { listeners in
            let key = ListenerKey(address: listener.address, service: listener.service)
            if listeners[key] === listener { listeners[key] = nil }
        }
    }

    /// Answers an `inbound` the presence server forwards: an offer per listener we
    /// have for that address and service.
    private func answerInbound(_ arguments: Inbound.Arguments, on connection: AMPConnection) async throws -> Inbound.Response {
        let listener = listeners.withLock { $0[ListenerKey(address: arguments.to, service: arguments.service)] }
        guard let listener, !listener.isClosed else {
            throw ConnectionError.notFound("\(arguments.to) is not listening for '\(arguments.service)' here")
        }
        if let authorize = listener.authorize, await !authorize(arguments.from) {
            throw ConnectionError.notFound("\(arguments.to) does not accept \(arguments.from) for '\(arguments.service)'")
        }
        await learnCallerAuthority(arguments.callerAuthority, of: arguments.from.domain)
        guard let offer = listener.offer(for: arguments.from, publishing: publishedHosts(seenOn: connection), publishing6: offeredIPv6Hosts,
                                         udpSource: arguments.udpSource, udpSource6: arguments.udpSource6) else {
            throw ConnectionError.notFound("\(arguments.to)'s listener is not ready")
        }
        // Behind a NAT that maps every destination anew, the caller's SYNs cannot reach
        // us: connect back at once (the caller waits for it on its shared port), using
        // up this offer's one connect-back.
        if let udpSource = arguments.udpSource, let port = listener.udpPort, listener.mappingLooksSymmetric,
           let destination = try? udpSource.peerSocketAddress(), listener.takeConnectBack(for: arguments.from, to: udpSource) {
            try? connectBack(listener, from: port, to: destination)
        }
        return Inbound.Response(listeners: [offer])
    }

    private func publishedHosts(seenOn connection: AMPConnection) -> [String] {
        if let hosts = configuration.publishedHosts { return hosts }
        let bound = configuration.listenHost
        if bound != "0.0.0.0", bound != "::" { return [bound] }
        // Our side of the presence connection, when it is IPv4 (the port is an IPv4 one;
        // IPv6 is offered on its own port); else this host's IPv4 addresses.
        if let local = connection.localAddress, case .v4 = local, let host = local.ipAddress { return [host] }
        let own = LocalAddresses.ipv4()
        return own.isEmpty ? ["127.0.0.1"] : own
    }

    // MARK: Connecting

    /// Connects as `from` to `to`'s `service`: asks `to`'s presence server for its
    /// listeners, then races their methods in waves `stagger` apart: `tcp@`, `ptcp@`
    /// (hole punching) and an early connect-back together, then `rptcp@` by `bind-udp`,
    /// then the relay. The first path whose TLS handshake verifies `to` wins (its claim
    /// of the listener id follows, pipelined with the first application bytes); the
    /// others are closed.
    ///
    /// `tcp@` paths start before `inbound` is answered: one that won before for the same
    /// addresses and service (remembered in memory, for the life of the node: `vertex
    /// tunnel` opens a stream per local connection), or else those the presence server
    /// answers at once to `direct-paths`. They run their TCP and TLS handshakes while
    /// `inbound` asks the listener, and claim the id of its offer when it arrives.
    public func connect(from: Q2QAddress, to: Q2QAddress, service: String, methods: Q2QMethodPolicy = .auto) async throws -> Q2QStream {
        try await connectPath(from: from, to: to, service: service, methods: methods, adoption: .bytes).stream
    }

    /// ``connect(from:to:service:methods:)``, with the path adopted as `adoption` says.
    func connectPath(from: Q2QAddress, to: Q2QAddress, service: String, methods: Q2QMethodPolicy,
                     adoption: PathAdoption) async throws -> Q2QPath {
        let identity = try await identity(from)
        let key = RememberedPathKey(from: from, to: to, service: service)
        let remembered = configuration.remembersPaths && methods.allows(name: "tcp") ? rememberedPaths.withLock { $0[key] } : nil
        // A late success is closed without waiting for TLS's close_notify.
        let racer = MethodRacer<Q2QPath>(stagger: configuration.stagger) { late in late.channel.close(promise: nil) }
        let path: Q2QPath
        do {
            if methods.allows(name: "tcp"), let authority = try? await store.pinnedAuthority(for: to.domain) {
                // A path remembered, or else those the presence server has from the
                // listeners' registrations: tried while `inbound` asks the listeners.
                let early: @Sendable () async throws -> [HostPort] = if let remembered {
                    { [remembered] }
                } else {
                    { [self] in try await directPaths(as: identity, to: to, service: service) }
                }
                path = try await connect(as: identity, to: to, service: service, methods: methods, adoption: adoption,
                                           early: early, authority: authority, remembering: key, racer: racer)
            } else {
                let introduction = try await introduce(identity, to: to, service: service, methods: methods, adoption: adoption)
                path = try await racer.race(attempts(for: introduction, skipping: [])).0
            }
        } catch let failure as MethodRacer<Q2QPath>.AllFailed {
            throw Q2QNodeError("cannot reach \(to)'s '\(service)': \(failure)")
        }
        if let address = path.method.tcpAddress { rememberedPaths.withLock { $0[key] = address } }
        logger.debug("connected", metadata: ["to": "\(to)", "method": "\(path.method)"])
        return path
    }

    /// The race with early `tcp@` paths (remembered, or from `direct-paths`): those from
    /// the moment they are known, and beside them the presence server's `inbound`
    /// answer and the race of every other method it offers. An early path claims the id
    /// of the offer that names it.
    private func connect(as identity: Q2QIdentity, to: Q2QAddress, service: String, methods: Q2QMethodPolicy,
                         adoption: PathAdoption, early: @escaping @Sendable () async throws -> [HostPort], authority: Q2QCertificate,
                         remembering key: RememberedPathKey, racer: MethodRacer<Q2QPath>) async throws -> Q2QPath {
        let introduction = Task { try await introduce(identity, to: to, service: service, methods: methods, adoption: adoption) }
        let earlyPaths = Task { [self] in ((try? await early()) ?? []).filter(mayTry) }
        defer {
            introduction.cancel()
            earlyPaths.cancel()
        }
        let direct = MethodRacer<Q2QPath>.Attempt(label: "early tcp") { [self] in
            let addresses = await earlyPaths.value
            guard !addresses.isEmpty else { throw Q2QNodeError("no tcp path known before inbound") }
            let ipv6Tried = addresses.contains { AddressFamily(host: $0.host) == .v6 }
            return try await racer.race(addresses.map { address in
                .init(label: "\(Q2QMethod.tcp(address)) (early)", delay: familyDelay(address, ipv6Tried: ipv6Tried)) { [self] in
                    try await dialEarly(address, as: identity, to: to, service: service, authority: authority,
                                        offers: { try await introduction.value.offers }, forgetting: key)
                }
            }).0
        }
        let others = MethodRacer<Q2QPath>.Attempt(label: "inbound") { [self] in
            let introduction = try await introduction.value
            return try await racer.race(attempts(for: introduction, skipping: Set(await earlyPaths.value))).0
        }
        do {
            return try await racer.race([direct, others]).0
        } catch {
            // Nobody listening (or the like) says more than the early paths' failures.
            if !Task.isCancelled, case .failure(let failure) = await introduction.result { throw failure }
            throw error
        }
    }

    /// One early `tcp@` path: TCP and TLS at once, then the claim of the offer that
    /// names this path; a remembered path that fails is forgotten.
    private func dialEarly(_ address: HostPort, as identity: Q2QIdentity, to: Q2QAddress, service: String,
                           authority: Q2QCertificate, offers: @escaping @Sendable () async throws -> [(offer: ListenerOffer, claim: ListenerClaim)],
                           forgetting key: RememberedPathKey) async throws -> Q2QPath {
        do {
            return try await DirectPaths.dial(address, as: identity, peer: to, authority: authority, listener: {
                guard let offer = try await offers().first(where: { $0.offer.methods.contains(.tcp(address)) }) else {
                    throw Q2QNodeError("\(to) no longer offers \(Q2QMethod.tcp(address))")
                }
                return offer.claim
            }, service: service, group: group, logger: logger)
        } catch {
            if !(error is CancellationError), !Task.isCancelled {
                rememberedPaths.withLock { if $0[key] == address { $0[key] = nil } }
            }
            throw error
        }
    }

    /// The `tcp@` paths `to`'s listeners registered, from its presence server at once
    /// (empty from a server that does not know `direct-paths`).
    private func directPaths(as identity: Q2QIdentity, to: Q2QAddress, service: String) async throws -> [HostPort] {
        let connection = try await link(as: identity, to: to.domain)
        let answer = try await callServer(connection, DirectPathsQuery.self, .init(from: identity.address, to: to, service: service))
        return answer.methods.compactMap(\.tcpAddress)
    }

    /// Whether `to` listens for `service` now, as its presence server knows (no listener
    /// is asked, nothing is offered): what a contact list shows as "reachable".
    public func isListening(as from: Q2QAddress, to: Q2QAddress, service: String) async throws -> Bool {
        let identity = try await identity(from)
        let connection = try await link(as: identity, to: to.domain)
        let answer = try await callServer(connection, DirectPathsQuery.self, .init(from: identity.address, to: to, service: service))
        return answer.listening ?? !answer.methods.isEmpty
    }

    /// What the presence server told us about `to`'s listeners, and what we need to try them.
    struct Introduction: Sendable {
        var identity: Q2QIdentity
        var to: Q2QAddress
        var service: String
        var methods: Q2QMethodPolicy
        var offers: [(offer: ListenerOffer, claim: ListenerClaim)]
        var connection: AMPConnection
        var authority: Q2QCertificate
        /// Our shared UDP port of each family PTCP may use.
        var udpPorts: [AddressFamily: UDPPort]
        /// Our IPv4 NAT mapping, as the presence server saw it.
        var mapping: HostPort?
        /// Whether the presence server answered our IPv6 discovery in time (nil: not
        /// asked). When it did not, IPv6 looks broken here and gets no head start.
        var ipv6Answered: Bool?
    }

    /// Our addresses as `inbound` names them: the answers of `discoveries` (most often
    /// already known), waiting at most `patience` for the first (with UDP blocked we go
    /// on without PTCP) and then at most `grace` for each other family, so that an
    /// IPv6 path that drops everything holds IPv4 back by no more than that.
    static func answers(of discoveries: [Task<DiscoveredAddress?, Never>], patience: Duration = .milliseconds(250),
                        grace: Duration = .milliseconds(50)) async -> [DiscoveredAddress] {
        let clock = ContinuousClock()
        var deadline = clock.now + patience
        var found: [DiscoveredAddress] = []
        for discovery in discoveries {
            // A millisecond at least: an answer already known is always taken.
            let wait = max(deadline - clock.now, .milliseconds(1))
            guard let answer = try? await withTimeout(wait, "address discovery", { await discovery.value }) ?? nil else { continue }
            if found.isEmpty { deadline = min(deadline, clock.now + grace) }
            found.append(answer)
        }
        return found
    }

    /// Asks `to`'s presence server (`inbound`) for its listeners of `service`.
    private func introduce(_ identity: Q2QIdentity, to: Q2QAddress, service: String,
                           methods: Q2QMethodPolicy, adoption: PathAdoption) async throws -> Introduction {
        // Our UDP mapping is learnt (or taken from the cache) while the presence
        // connection is made, so that the listener can seed its NAT towards it; with
        // no answer soon after (UDP blocked), we go on without PTCP.
        let udp = await udpPaths(towards: to.domain, policy: methods)
        let connection = try await link(as: identity, to: to.domain)
        let sources = await Self.answers(of: [AddressFamily.v4, .v6].compactMap { udp[$0]?.discovery })
        let offers: [ListenerOffer]
        do {
            offers = try await callServer(connection, Inbound.self, .init(from: identity.address, to: to, service: service,
                                                                          udpSources: sources)).listeners
        } catch let error as ConnectionError {
            throw Q2QNodeError(error.errorDescription)
        }
        guard let authority = await authority(for: to.domain) else {
            throw Q2QNodeError("the CA of \(to.domain) is not pinned")
        }
        return Introduction(identity: identity, to: to, service: service, methods: methods,
                            offers: offers.map { ($0, ListenerClaim($0.identifier, adoption: adoption)) }, connection: connection,
                            authority: authority, udpPorts: udp.mapValues(\.port),
                            mapping: sources.first { AddressFamily(host: $0.address.host) == .v4 }?.address,
                            ipv6Answered: udp[.v6]?.discovery == nil ? nil : sources.contains { AddressFamily(host: $0.address.host) == .v6 })
    }

    /// An attempt per method of every offer that `methods` allows, but `skipping`
    /// (`tcp@` paths already being tried). Direct paths start together (with the wait for
    /// a listener that connects back at once), then the listener asked to connect back
    /// by bind-udp, the relay last.
    private func attempts(for introduction: Introduction, skipping: Set<HostPort>) throws -> [MethodRacer<Q2QPath>.Attempt] {
        let (identity, to, service, authority, connection) = (introduction.identity, introduction.to, introduction.service,
                                                              introduction.authority, introduction.connection)
        var attempts: [MethodRacer<Q2QPath>.Attempt] = []
        let ipv6Tried = introduction.ipv6Answered != false && introduction.offers.contains { offer in
            offer.offer.methods.contains { introduction.methods.allows($0) && triesIPv6($0, udpPorts: introduction.udpPorts) }
        }
        // Kernel TCP gets a head start over PTCP where it surely works as well: towards a
        // listener on one of our links. Elsewhere (behind its NAT or firewall) waiting
        // for a `tcp@` path that may never answer would only delay PTCP.
        let links = LocalAddresses.links()
        func tcpNearby(_ methods: [Q2QMethod]) -> Bool {
            methods.contains { method in
                guard let address = method.tcpAddress, introduction.methods.allows(method) else { return false }
                return LocalAddresses.isOnLink(address.host, links: links)
            }
        }
        for (offer, id) in introduction.offers {
            for method in offer.methods where introduction.methods.allows(method) {
                switch method {
                case .tcp(let address):
                    guard !skipping.contains(address), mayTry(address) else { continue }
                    attempts.append(.init(label: method.description, wave: 0, delay: familyDelay(address, ipv6Tried: ipv6Tried)) { [group, logger] in
                        try await DirectPaths.dial(address, as: identity, peer: to, authority: authority, listener: { id },
                                                   service: service, group: group, logger: logger)
                    })
                case .ptcp(let address):
                    guard let udpPort = introduction.udpPorts[AddressFamily(host: address.host) ?? .v4] else { continue }
                    let headStart = (tcpNearby(offer.methods) ? configuration.tcpHeadStart : .zero) + familyDelay(address, ipv6Tried: ipv6Tried)
                    attempts.append(.init(label: method.description, wave: 0, delay: headStart) { [self] in
                        try await dialPTCP(address, from: udpPort, as: identity, peer: to, authority: authority,
                                           listener: id, service: service)
                    })
                case .rptcp(let address):
                    guard let publicHost = introduction.mapping?.host else { continue }
                    // A listener behind a symmetric NAT has already started connecting back.
                    attempts.append(.init(label: method.description + " (early)", wave: 0) { [self] in
                        try await takeConnectBack(from: address, as: identity, peer: to, authority: authority,
                                                  listener: id, service: service)
                    })
                    attempts.append(.init(label: method.description, wave: 1) { [self] in
                        try await dialReversePTCP(address, publicHost: publicHost, over: connection, as: identity, peer: to,
                                                  authority: authority, listener: id, service: service)
                    })
                case .virtual:
                    attempts.append(.init(label: "relay", wave: 2) { [self] in
                        try await dialRelayed(over: connection, listener: id, as: identity, peer: to,
                                              authority: authority, service: service)
                    })
                case .unknown:
                    continue
                }
            }
        }
        guard !attempts.isEmpty else {
            let offered = introduction.offers.flatMap(\.offer.methods).map(\.description).joined(separator: ", ")
            throw Q2QNodeError("\(to) offers no method this connection may use (offered: \(offered))")
        }
        return attempts
    }

    /// The shared UDP port of each family and the discovery of our address on it as
    /// `domain`'s presence server sees it, when UDP is on and `policy` allows a PTCP
    /// method: IPv4 always, IPv6 when this host has an address to offer.
    private func udpPaths(towards domain: String, policy: Q2QMethodPolicy) async -> [AddressFamily: (port: UDPPort, discovery: Task<DiscoveredAddress?, Never>?)] {
        guard configuration.udpEnabled, policy.allows(name: "ptcp") || policy.allows(name: "rptcp") else { return [:] }
        var hosts: [AddressFamily: String] = [.v4: ipv4ListenHost]
        hosts[.v6] = udpHost6
        let server = try? await client.server(for: domain)
        var paths: [AddressFamily: (port: UDPPort, discovery: Task<DiscoveredAddress?, Never>?)] = [:]
        for (family, host) in hosts {
            guard let port = await udp.outgoingPort(family, host: host, group: group, logger: logger) else { continue }
            paths[family] = (port, server.map { udp.discovery(of: port, family: family, via: $0) })
        }
        return paths
    }

    /// Closes every listener and presence connection.
    public func shutdown() async {
        for listener in listeners.withLock({ Array($0.values) }) { await listener.close() }
        await ampConnections.closeAll()
        await links.closeAll()
        await udp.close()
    }
}

/// A node-side failure, worded for the person at the terminal.
public struct Q2QNodeError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Secured connections to presence servers, one per (identity, domain): concurrent
/// requests for one being made wait for the same attempt; a closed one is replaced.
actor PresenceLinks {
    private var links: [String: Task<AMPConnection, any Error>] = [:]

    func connection(for key: String, make: @escaping @Sendable () async throws -> AMPConnection) async throws -> AMPConnection {
        if let existing = links[key] {
            if let connection = try? await existing.value, connection.channel.isActive { return connection }
            if links[key] == existing { links[key] = nil }
        }
        if let current = links[key] { return try await current.value }
        let task = Task { try await make() }
        links[key] = task
        do {
            return try await task.value
        } catch {
            if links[key] == task { links[key] = nil }
            throw error
        }
    }

    func closeAll() async {
        let all = links.values
        links = [:]
        for task in all { await (try? await task.value)?.close() }
    }
}

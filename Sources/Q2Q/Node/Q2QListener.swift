import AMP
import Foundation
import Locking
import NIOCore
import NIOSSL
import PTCP

/// Incoming streams for one address and service. Created by ``Q2QNode/listen(as:service:description:authorize:)``
/// (byte streams, on ``connections``) or ``Q2QNode/serveAMP(as:service:description:authorize:responders:)``
/// (AMP connections, answered by their responders and kept in the node's connection
/// cache); registered with the address's presence server, and re-registered when that
/// connection is lost, until ``close()``.
public final class Q2QListener: Sendable {
    public let address: Q2QAddress
    public let service: String
    public let description: String
    /// Verified incoming streams, until the listener closes (none for an AMP listener).
    public let connections: AsyncStream<Q2QStream>

    let identity: Q2QIdentity
    let node: Q2QNode
    private let continuation: AsyncStream<Q2QStream>.Continuation
    private let state = Locked(State())

    /// What an id handed out in an `inbound` answer allows (its caller is the entry's
    /// owner).
    private struct Offer {
        /// The caller's UDP mapping as its presence server checked it (`udp_source`): the
        /// only place a connect-back for this offer may go.
        var udpSource: HostPort?
        /// Each offer allows one `bind-udp` connect-back, so that a caller cannot aim
        /// many of our SYNs at somebody else with one `inbound`.
        var mayConnectBack = true
    }

    private struct State {
        var acceptor: (any Channel)?
        /// The IPv6 `tcp@` port and `ptcp@` port, when the host has IPv6 to offer
        /// (``Q2QNode/startIPv6(for:)``).
        var acceptor6: (any Channel)?
        var udp6: UDPPort?
        var supervisor: Task<Void, Never>?
        /// The UDP port of PTCP paths, its NAT mapping as our presence server last saw
        /// it, and the task that keeps asking (which also keeps the mapping open).
        var udp: UDPPort?
        var mapping: HostPort?
        var mapper: Task<Void, Never>?
        /// The home gateway's mappings of our ports (``MaintainedPortMapping``), and the
        /// public addresses it granted: reachable from anywhere, whatever our NAT does.
        var portMappings: [MaintainedPortMapping] = []
        var portMapped: [PortMappingProtocol: HostPort] = [:]
        /// Listener ids handed out in `inbound` answers (all live ``claimLifetime``),
        /// owned by the caller that may claim each.
        var pending = ExpiringTable<Q2QAddress, Offer>()
        var closed = false
    }

    /// How long an id from an `inbound` answer may be claimed (the original's 120 s).
    static let claimLifetime: TimeInterval = 120
    /// Unclaimed offers one caller may hold at once: a caller looping `inbound` fills
    /// its own share, not our memory.
    static let maximumPendingPerCaller = 64

    /// Who may connect: asked for each caller before it is given an offer (the
    /// original's verify hook); nil accepts every verified caller.
    let authorize: (@Sendable (Q2QAddress) async -> Bool)?

    /// What each claimed path becomes; AMP paths go to `adopted`, not to ``connections``.
    let adoption: PathAdoption
    private let adopted: (@Sendable (Q2QPath) -> Void)?

    init(identity: Q2QIdentity, service: String, description: String, node: Q2QNode,
         authorize: (@Sendable (Q2QAddress) async -> Bool)? = nil,
         adoption: PathAdoption = .bytes, adopted: (@Sendable (Q2QPath) -> Void)? = nil) {
        self.identity = identity
        self.address = identity.address
        self.service = service
        self.description = description
        self.node = node
        self.authorize = authorize
        self.adoption = adoption
        self.adopted = adopted
        (connections, continuation) = AsyncStream.makeStream(of: Q2QStream.self)
    }

    func attach(acceptor: any Channel) {
        state.withLock { $0.acceptor = acceptor }
    }

    func attach(acceptor6: any Channel) {
        state.withLock { $0.acceptor6 = acceptor6 }
    }

    func attach(udp6: UDPPort) {
        state.withLock { $0.udp6 = udp6 }
    }

    func attach(supervisor: Task<Void, Never>) {
        state.withLock { $0.supervisor = supervisor }
    }

    func attach(udp: UDPPort, mapper: Task<Void, Never>) {
        state.withLock {
            $0.udp = udp
            $0.mapper = mapper
        }
    }

    func attach(portMappings: [MaintainedPortMapping]) {
        let closed = state.withLock { state in
            state.portMappings += portMappings
            return state.closed
        }
        if closed { Task { for mapping in portMappings { await mapping.close() } } }
    }

    func setPortMapped(_ proto: PortMappingProtocol, _ address: HostPort?) {
        state.withLock { $0.portMapped[proto] = address }
    }

    /// How many of our ports are kept mapped on the gateway (or being asked for).
    var portMappingCount: Int { state.withLock { $0.portMappings.count } }

    /// The public address the gateway mapped our `proto` port to, if it did.
    func portMapped(_ proto: PortMappingProtocol) -> HostPort? { state.withLock { $0.portMapped[proto] } }

    var udpPort: UDPPort? { state.withLock { $0.udp } }

    /// Whether our NAT seems to map each destination to a new port (its mapping's port
    /// differs from our socket's): then a caller cannot reach our mapping, and we connect
    /// back to it at once. A port the gateway mapped is reachable as it is.
    var mappingLooksSymmetric: Bool {
        state.withLock { state in
            guard state.portMapped[.udp] == nil, let mapping = state.mapping, let port = state.udp?.localPort else { return false }
            return mapping.port != port
        }
    }

    func setMapping(_ mapping: HostPort?) {
        state.withLock { $0.mapping = mapping }
    }

    /// Whether `address` is our UDP port: its mapping, or the port itself (no NAT, or
    /// a caller on our side of it).
    func owns(udp address: HostPort) -> Bool {
        state.withLock { state in
            guard let port = state.udp?.localPort else { return false }
            return address == state.mapping || address == state.portMapped[.udp] || address.port == port
        }
    }

    /// Takes the connect-back allowance of an unexpired offer we made to `address`
    /// whose caller's UDP mapping (as its presence server checked it) is on the host of
    /// `destination` (the caller connects back to a new port of its own); `false` when
    /// there is none left.
    func takeConnectBack(for address: Q2QAddress, to destination: HostPort, now: Date = Date()) -> Bool {
        state.withLock { state in
            guard let id = state.pending.entries.first(where: { _, offer in
                offer.owner == address && offer.value.udpSource?.host == destination.host && offer.expires > now && offer.value.mayConnectBack
            })?.key
            else { return false }
            state.pending.modify(id) { $0.mayConnectBack = false }
            return true
        }
    }

    private let tls = Locked<NIOSSLContext?>(nil)

    /// The TLS server context presenting our identity (made once).
    func tlsContext() throws -> NIOSSLContext {
        try tls.withLock { context in
            if let context { return context }
            let made = try NIOSSLContext(configuration: try identity.tlsConfiguration(server: true, verifyingPeer: true))
            context = made
            return made
        }
    }

    /// Whether `id` is an unexpired id we handed out (not consumed: the path claims it).
    func hasPendingClaim(_ id: String, now: Date = Date()) -> Bool {
        state.withLock { $0.pending.live(id, now: now) != nil }
    }

    /// The port of the direct (`tcp@`) path.
    var port: Int? { state.withLock { $0.acceptor?.localAddress?.port } }

    /// The port of the direct (`tcp@`) path over IPv6, when there is one.
    var port6: Int? { state.withLock { $0.acceptor6?.localAddress?.port } }

    /// An offer for `from`, with a fresh unguessable id: `tcp@` and `ptcp@` on each of our
    /// IPv6 addresses `hosts6` (first: Happy Eyeballs prefers them), `tcp@` on each of
    /// `hosts` and on the gateway's mapping of our TCP port, `ptcp@` on the gateway's
    /// mapping of our UDP port, and when our UDP mapping is known `ptcp@` and `rptcp@` on
    /// it. With `udpSource` (the caller's IPv4 mapping) and `udpSource6` (its IPv6
    /// address) our NAT and firewall are seeded towards the caller first, so that its
    /// PTCP SYN gets in.
    func offer(for from: Q2QAddress, publishing hosts: [String], publishing6 hosts6: [String] = [], udpSource: HostPort?,
               udpSource6: HostPort? = nil, now: Date = Date()) -> ListenerOffer? {
        guard let port else { return nil }
        let id = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max)) }.joined()
        let expires = now + Self.claimLifetime
        let made = state.withLock { state -> (UDPPort?, HostPort?, [PortMappingProtocol: HostPort], (any Channel)?, UDPPort?)? in
            state.pending.expire(now: now)
            guard state.pending.count(of: from) < Self.maximumPendingPerCaller else { return nil }
            state.pending.insert(id, owner: from, expires: expires, value: Offer(udpSource: udpSource))
            return (state.udp, state.mapping, state.portMapped, state.acceptor6, state.udp6)
        }
        guard let (udp, mapping, portMapped, acceptor6, udp6) = made else { return nil }
        var methods: [Q2QMethod] = []
        if let port6 = acceptor6?.localAddress?.port { methods += hosts6.map { .tcp(HostPort(host: $0, port: port6)) } }
        // The UDP port is bound to one of our addresses: offered while we still have it.
        if let udp6, let host6 = udp6.endpoint.localAddress.ipAddress, hosts6.contains(host6) {
            if let caller = try? udpSource6?.peerSocketAddress(), case .v6 = caller { udp6.seed(towards: caller) }
            methods.append(.ptcp(HostPort(host: host6, port: udp6.localPort)))
        }
        methods += hosts.map { .tcp(HostPort(host: $0, port: port)) }
        if let mappedTCP = portMapped[.tcp], !hosts.contains(mappedTCP.host) || mappedTCP.port != port {
            methods.append(.tcp(mappedTCP))
        }
        if let udp {
            if udpSource != nil, let caller = try? udpSource?.peerSocketAddress(), mapping != nil || portMapped[.udp] != nil {
                udp.seed(towards: caller)
            }
            if let mappedUDP = portMapped[.udp] { methods.append(.ptcp(mappedUDP)) }
            if let mapping {
                // A caller behind the same NAT (same public address) reaches our private one.
                if udpSource?.host == mapping.host, let host = hosts.first, host != mapping.host {
                    methods.append(.ptcp(HostPort(host: host, port: udp.localPort)))
                }
                if mapping != portMapped[.udp] { methods.append(.ptcp(mapping)) }
                methods.append(.rptcp(mapping))
            }
        }
        return ListenerOffer(id: id, methods: methods, expires: AmpTime(expires), description: description)
    }

    /// `Retrieve-Connection` on a verified path: the id must be one we handed to the
    /// address the path's certificate names, unused and not expired.
    func claim(_ id: String, on connection: AMPConnection) async throws -> (AMPEmpty, AMPProtocolSwitch) {
        guard let certificate = try await connection.peerCertificate(),
              let peer = try Q2QCertificate(certificate).address else {
            throw ConnectionError.noSuchConnection("no verified peer on this path")
        }
        let now = Date()
        let claim = state.withLock { $0.pending.remove(id) }
        guard let claim, claim.expires > now, claim.owner == peer else {
            throw ConnectionError.noSuchConnection("no connection '\(id.prefix(64))' for \(peer)")
        }
        let local = connection.localAddress.flatMap(HostPort.init)
        let method: Q2QMethod = if connection.channel is VirtualChannel {
            .virtual
        } else if PTCPEndpoint.isConnection(connection.channel) {
            local.map(Q2QMethod.ptcp) ?? .unknown("ptcp")
        } else {
            local.map(Q2QMethod.tcp) ?? .unknown("tcp")
        }
        let (continuation, adoption, adopted, logger) = (self.continuation, self.adoption, self.adopted, node.logger)
        return (AMPEmpty(), { [address, service] channel in
            let end = try adoption.adopt(channel, peer: peer, isListener: true, logger: logger)
            let path = Q2QPath(end: end, local: address, peer: peer, service: service, method: method)
            switch end {
            case .bytes: continuation.yield(path.stream)
            case .amp: adopted?(path)
            }
        })
    }

    /// Stops listening: unregisters (by closing the registration's renewal), closes the
    /// direct port and ends ``connections``.
    public func close() async {
        let (acceptor, supervisor, udp, mapper, portMappings, acceptor6, udp6) = state.withLock { state in
            state.closed = true
            return (state.acceptor, state.supervisor, state.udp, state.mapper, state.portMappings, state.acceptor6, state.udp6)
        }
        supervisor?.cancel()
        mapper?.cancel()
        // The gateway's mappings are deleted, not left to expire (they point at a port
        // that is about to close, which another program may bind next).
        await withDiscardingTaskGroup { group in
            for mapping in portMappings { group.addTask { await mapping.close() } }
        }
        try? await acceptor?.close()
        try? await acceptor6?.close()
        await udp?.close()
        await udp6?.close()
        continuation.finish()
        node.forget(self)
    }

    var isClosed: Bool { state.withLock { $0.closed } }
}

import AMP
import Foundation
import Locking
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PTCP

/// The node's shared UDP ports for outgoing PTCP paths (one per address family), and
/// what presence servers told it about its addresses on them.
final class NodeUDP: Sendable {
    private let ports = Locked<[AddressFamily: Task<UDPPort?, Never>]>([:])
    private let mappings = Locked<[DiscoveryKey: (discovery: Task<DiscoveredAddress?, Never>, started: ContinuousClock.Instant)]>([:])
    /// A mapping is asked for again after this long; a failed discovery sooner, so that
    /// new connections go direct soon after UDP comes back.
    static let mappingLifetime: Duration = .seconds(60)
    static let failureLifetime: Duration = .seconds(5)

    private struct DiscoveryKey: Hashable {
        var server: HostPort
        var family: AddressFamily
    }

    /// Connections listeners opened back to the shared port (see ``ConnectBacks``).
    let connectBacks = ConnectBacks()

    /// The port of `family`, bound on first use to `host`; `nil` when it cannot be bound.
    /// It also accepts the connections listeners open back to it, for the attempts that
    /// wait for them.
    func outgoingPort(_ family: AddressFamily = .v4, host: String, group: any EventLoopGroup, logger: Logger) async -> UDPPort? {
        let task = ports.withLock { ports in
            if let task = ports[family] { return task }
            let made = Task { [connectBacks] () -> UDPPort? in
                do {
                    let port = try await UDPPort.bind(host: host, group: group,
                                                      accepting: { $0.eventLoop.makeSucceededVoidFuture() })
                    Task {
                        for await channel in port.endpoint.incoming { connectBacks.arrived(channel) }
                    }
                    return port
                } catch {
                    logger.notice("no UDP port for PTCP paths", metadata: ["family": "\(family)", "error": "\(error)"])
                    return nil
                }
            }
            ports[family] = made
            return made
        }
        return await task.value
    }

    /// Finding our address as `server` sees `port` over the port's family (cached: the
    /// task of a discovery started in the last `mappingLifetime`, unless it failed more
    /// than `failureLifetime` ago). Callers wait on it only briefly, so that blocked UDP
    /// never stalls them, and a late answer still serves the next caller. Without an
    /// address of the server in that family, the answer is `nil`.
    func discovery(of port: UDPPort, family: AddressFamily, via server: HostPort) -> Task<DiscoveredAddress?, Never> {
        let now = ContinuousClock.now
        let key = DiscoveryKey(server: server, family: family)
        return mappings.withLock { known in
            if let entry = known[key], now - entry.started < Self.mappingLifetime { return entry.discovery }
            let discovery = Task { () -> DiscoveredAddress? in
                guard let address = server.socketAddresses(family: family).first else { return nil }
                return await port.discoverMapping(via: address)
            }
            known[key] = (discovery, now)
            Task { [self] in
                guard await discovery.value == nil else { return }
                try? await Task.sleep(for: Self.failureLifetime)
                mappings.withLock { mappings in
                    if mappings[key]?.discovery == discovery { mappings[key] = nil }
                }
            }
            return discovery
        }
    }

    func close() async {
        let tasks = ports.withLock { ports in
            defer { ports = [:] }
            return Array(ports.values)
        }
        for task in tasks { await task.value?.close() }
    }
}

/// IPv4 or IPv6: a node keeps a UDP port, and discovers its address, per family.
public enum AddressFamily: Hashable, Sendable {
    case v4, v6

    public init?(_ address: SocketAddress) {
        switch address {
        case .v4: self = .v4
        case .v6: self = .v6
        case .unixDomainSocket: return nil
        }
    }

    /// The family of an IP address given as text (`nil` for a name).
    public init?(host: String) {
        guard HostPort.isIPAddress(host) else { return nil }
        self = LocalAddresses.isIPv6(host) ? .v6 : .v4
    }

    /// The address a socket of this family binds to listen on every interface.
    public var wildcard: String { self == .v4 ? "0.0.0.0" : "::" }
}

extension HostPort {
    /// Every socket address of the host (an address, or each A and AAAA record of a
    /// name; resolving blocks: presence servers are usually given by IP address, in the
    /// node's own configuration), IPv6 ones first as the resolver orders them (RFC
    /// 6724); `family` keeps one family only.
    public func socketAddresses(family: AddressFamily? = nil) -> [SocketAddress] {
        let all: [SocketAddress]
        if let literal = try? SocketAddress(ipAddress: host, port: port) {
            all = [literal]
        } else {
            all = Self.resolve(host, port: port)
        }
        guard let family else { return all }
        return all.filter { AddressFamily($0) == family }
    }

    /// Every address `getaddrinfo` gives for `name` (TCP ones only, so each once).
    private static func resolve(_ name: String, port: Int) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, String(port), &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let entry = next {
            if let address = entry.pointee.ai_addr {
                switch Int32(entry.pointee.ai_family) {
                case AF_INET:
                    addresses.append(address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: name) })
                case AF_INET6:
                    addresses.append(address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: name) })
                default:
                    break
                }
            }
            next = entry.pointee.ai_next
        }
        return addresses
    }

    /// The socket address of an IP address and port as a peer sent them: never a name
    /// (a peer must not make us resolve names, or send to hosts it names).
    func peerSocketAddress() throws -> SocketAddress {
        try SocketAddress(ipAddress: host, port: port)
    }
}

extension Q2QNode {
    /// A `ptcp@` attempt: PTCP from the shared port to the listener's mapping (its NAT
    /// was seeded towards ours when it answered `inbound`), then ``PathHandshake``.
    func dialPTCP(_ address: HostPort, from port: UDPPort, as identity: Q2QIdentity, peer: Q2QAddress,
                  authority: Q2QCertificate, listener ticket: ListenerClaim, service: String) async throws -> Q2QPath {
        // TLS is in place before the PTCP channel starts, so its first flight rides in the SYN.
        let tls = try PathHandshake.connectorTLS(as: identity)
        let installed = NIOLockedValueBox<PathHandshake.Connector?>(nil)
        let channel = try await port.endpoint.connect(to: try address.peerSocketAddress()) { [logger] channel in
            channel.eventLoop.makeCompletedFuture {
                let connector = try PathHandshake.installConnector(on: channel, tls: tls, peer: peer, authority: authority, logger: logger)
                installed.withLockedValue { $0 = connector }
            }
        }
        guard let connector = installed.withLockedValue({ $0 }) else { throw ChannelError.inappropriateOperationForState }
        return try await PathHandshake.claim({ ticket }, over: connector, on: channel, as: identity, peer: peer,
                                             service: service, method: .ptcp(address), logger: logger)
    }

    /// An `rptcp@` attempt, the listener connecting back: a fresh UDP port seeds our NAT
    /// towards the listener's mapping, `bind-udp` (through the presence server) asks the
    /// listener to open PTCP from that mapping to our fresh port, and the first
    /// connection that arrives runs ``PathHandshake`` with us as the TLS client. The
    /// fresh port lives as long as the stream.
    func dialReversePTCP(_ address: HostPort, publicHost: String, over connection: AMPConnection, as identity: Q2QIdentity,
                         peer: Q2QAddress, authority: Q2QCertificate, listener ticket: ListenerClaim, service: String) async throws -> Q2QPath {
        let port = try await UDPPort.bind(host: ipv4ListenHost, group: group, accepting: { $0.eventLoop.makeSucceededVoidFuture() })
        do {
            port.seed(towards: try address.peerSocketAddress())
            let request = BindUDP.Arguments(service: service, listener: peer, caller: identity.address, from: address,
                                            to: HostPort(host: publicHost, port: port.localPort))
            _ = try await connection.call(BindUDP.self, request)
            let channel = try await withTimeout(.seconds(10), "the listener connecting back") {
                var incoming = port.endpoint.incoming.makeAsyncIterator()
                guard let channel = await incoming.next() else { throw Q2QNodeError("the UDP port closed") }
                return channel
            }
            let stream = try await PathHandshake.claim(on: channel, as: identity, peer: peer, authority: authority,
                                                       listener: { ticket }, service: service, method: .rptcp(address), logger: logger)
            channel.closeFuture.whenComplete { _ in Task { await port.close() } }
            return stream
        } catch {
            await port.close()
            throw error
        }
    }

    /// `bind-udp` passed on by our presence server: when the listener it names has the
    /// UDP port it names and recently offered itself to the caller (one connect-back per
    /// offer), connect back.
    func answerBindUDP(_ arguments: BindUDP.Arguments, listener: Q2QListener?) throws -> AMPEmpty {
        guard let listener, let port = listener.udpPort, listener.owns(udp: arguments.udpsrc) else {
            throw ConnectionError.connectionError("UDP port \(arguments.udpsrc) is not a listener's here")
        }
        // Only towards the mapping the caller's own presence server checked when it
        // asked for the offer: never at an address the request names on its own.
        guard listener.takeConnectBack(for: arguments.q2qdst, to: arguments.udpdst) else {
            throw ConnectionError.connectionError("no listener here has an unused offer to \(arguments.q2qdst) at \(arguments.udpdst)")
        }
        try connectBack(listener, from: port, to: arguments.udpdst.peerSocketAddress())
        return AMPEmpty()
    }

    /// Opens PTCP from the listener's UDP port to `destination` and runs the listener's
    /// side of ``PathHandshake`` on it (the caller stays the TLS client and claims).
    func connectBack(_ listener: Q2QListener, from port: UDPPort, to destination: SocketAddress) throws {
        let tls = try listener.tlsContext()
        let logger = self.logger
        Task {
            do {
                _ = try await port.endpoint.connect(to: destination) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try PathHandshake.installAcceptor(on: channel, for: listener, tls: tls, logger: logger)
                    }
                }
            } catch {
                logger.debug("connecting back failed", metadata: ["to": "\(destination)", "error": "\(error)"])
            }
        }
    }

    /// The other half of an early connect-back: the connection the listener at
    /// `address` (its `rptcp@` mapping) opened to our shared port, claimed as TLS client.
    func takeConnectBack(from address: HostPort, as identity: Q2QIdentity, peer: Q2QAddress, authority: Q2QCertificate,
                         listener ticket: ListenerClaim, service: String) async throws -> Q2QPath {
        guard let channel = await udp.connectBacks.take(from: address.host, timeout: .seconds(3)) else {
            throw Q2QNodeError("\(peer) did not connect back")
        }
        return try await PathHandshake.claim(on: channel, as: identity, peer: peer, authority: authority,
                                             listener: { ticket }, service: service, method: .rptcp(address), logger: logger)
    }
}

import Foundation
import NIOCore

/// IPv6: a listener that listens on every interface also listens on IPv6 (a TCP port
/// on `::` and a UDP port on its first global address) and offers `tcp@` on each of this
/// host's global IPv6 addresses and `ptcp@` on that first one. Over IPv6 there is no NAT to map or guess: the
/// address is the host's own, and its router's firewall lets in only replies to what
/// the host sent, so the listener seeds its firewall towards the caller's IPv6 address
/// (`udp_source6` in `inbound`) exactly as it seeds an IPv4 NAT.
extension Q2QNode {
    /// The IPv6 addresses this node's listeners offer and its connections start from:
    /// this host's global ones, when IPv6 is on and listeners listen on every interface
    /// without published hosts of their own. Read anew each time (addresses come and go).
    var offeredIPv6Hosts: [String] {
        guard configuration.ipv6, configuration.publishedHosts == nil,
              configuration.listenHost == "0.0.0.0" || configuration.listenHost == "::" else { return [] }
        return LocalAddresses.ipv6(includingUniqueLocal: configuration.ipv6UniqueLocal)
    }

    /// Where IPv4 sockets are bound: `listenHost`, `::` meaning every interface as
    /// `0.0.0.0` does (IPv6 has sockets of its own, each family being served apart).
    var ipv4ListenHost: String {
        configuration.listenHost == AddressFamily.v6.wildcard ? AddressFamily.v4.wildcard : configuration.listenHost
    }

    /// The listener's IPv6 TCP acceptor and UDP port, when this host has an IPv6 address
    /// to offer. Either failing leaves the listener on IPv4 only, which it says.
    ///
    /// The UDP port is bound to one address (``udpHost6``), not to `::`: a datagram from
    /// a socket on `::` leaves from whichever address the kernel prefers (with temporary
    /// addresses, often another than the one the peer sent to), and the peer's firewall
    /// drops what comes from an address it never sent to. TCP has no such problem.
    func startIPv6(for listener: Q2QListener) async {
        guard let udpHost = udpHost6 else { return }
        do {
            let acceptor = try await DirectPaths.bindAcceptor(host: AddressFamily.v6.wildcard, port: 0, listener: listener,
                                                              group: group, logger: logger)
            listener.attach(acceptor6: acceptor)
        } catch {
            logger.notice("no IPv6 port for tcp paths", metadata: ["address": "\(listener.address)", "error": "\(error)"])
        }
        guard configuration.udpEnabled else { return }
        do {
            listener.attach(udp6: try await bindUDP(host: udpHost, for: listener))
        } catch {
            logger.notice("no IPv6 UDP port for PTCP paths", metadata: ["address": "\(listener.address)", "error": "\(error)"])
        }
    }

    /// The IPv6 address UDP ports are bound to (listeners' and the shared outgoing one):
    /// the first offered, so that what is sent from them leaves from the address offered.
    var udpHost6: String? { offeredIPv6Hosts.first }

    /// Whether a path to `address` may be tried: an IPv6 one only with IPv6 on.
    func mayTry(_ address: HostPort) -> Bool {
        configuration.ipv6 || AddressFamily(host: address.host) != .v6
    }

    /// Happy Eyeballs (RFC 8305): how long an attempt towards `address` waits behind the
    /// IPv6 attempts of its wave, when some are tried (`ipv6Tried`); IPv6 ones never wait.
    func familyDelay(_ address: HostPort, ipv6Tried: Bool) -> Duration {
        ipv6Tried && AddressFamily(host: address.host) != .v6 ? configuration.ipv6HeadStart : .zero
    }

    /// Whether `method` would be tried over IPv6 with the UDP ports we have.
    func triesIPv6(_ method: Q2QMethod, udpPorts: [AddressFamily: UDPPort]) -> Bool {
        switch method {
        case .tcp(let address): AddressFamily(host: address.host) == .v6
        case .ptcp(let address): AddressFamily(host: address.host) == .v6 && udpPorts[.v6] != nil
        case .rptcp, .virtual, .unknown: false
        }
    }
}

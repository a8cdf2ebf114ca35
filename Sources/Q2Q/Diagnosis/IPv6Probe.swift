import NIOCore
import NIOPosix

/// Whether this host can be reached directly over IPv6 (`vertex doctor`): its global
/// addresses, the presence server's IPv6 address, and where the server sees a UDP
/// socket bound to our first address (the socket listeners punch from). Over IPv6
/// there is no NAT to classify: an answer means peers with IPv6 can punch through our
/// firewall to us, whatever the IPv4 NAT does.
public struct IPv6Probe: Sendable, Codable, Equatable {
    /// This host's global IPv6 addresses (``LocalAddresses/ipv6(includingUniqueLocal:)``).
    public var addresses: [String]
    /// The presence server's IPv6 address, nil when its address has none.
    public var serverAddress: String?
    /// Where the server saw our IPv6 UDP socket; nil when it did not answer (or was not asked).
    public var seen: HostPort?

    public static func run(server: HostPort, includingUniqueLocal: Bool = false,
                           group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async -> IPv6Probe {
        let addresses = LocalAddresses.ipv6(includingUniqueLocal: includingUniqueLocal)
        let serverAddress = server.socketAddresses(family: .v6).first
        var probe = IPv6Probe(addresses: addresses, serverAddress: serverAddress?.ipAddress, seen: nil)
        guard let host = addresses.first, let serverAddress,
              let port = try? await UDPPort.bind(host: host, group: group) else { return probe }
        probe.seen = await port.discoverMapping(via: serverAddress)?.address
        await port.close()
        return probe
    }
}

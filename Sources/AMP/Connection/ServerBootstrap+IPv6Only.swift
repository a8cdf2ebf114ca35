import NIOCore
import NIOPosix

extension ServerBootstrap {
    /// A socket bound to an IPv6 address serves IPv6 only (`IPV6_V6ONLY`; NIO turns it
    /// off): servers bind each family on its own socket, so that the IPv4 one can share
    /// the port, and IPv4 peers never appear as `::ffff:` addresses.
    public func ipv6Only(binding host: String) -> ServerBootstrap {
        guard host.contains(":") else { return self }
        return serverChannelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
    }
}

import NIOCore
import NIOPosix

extension DatagramBootstrap {
    /// A socket bound to an IPv6 address serves IPv6 only (`IPV6_V6ONLY`; NIO turns it
    /// off): each family has its own socket, and IPv4 peers never appear as `::ffff:`
    /// addresses (which would match none of the IPv4 addresses they are known by).
    public func ipv6Only(binding host: String) -> DatagramBootstrap {
        guard host.contains(":") else { return self }
        return channelOption(ChannelOptions.Types.SocketOption(level: .ipv6, name: .ipv6_v6only), value: 1)
    }
}

/// Tunables of a PTCP connection. The defaults suit the internet: datagrams that fit
/// IPv6's minimum MTU, a window for ~300 Mbit/s at 100 ms, a keepalive inside common
/// NAT UDP timeouts.
public struct PTCPConfiguration: Sendable {
    /// Largest UDP payload sent: 1,232 bytes keeps the IP packet within IPv6's
    /// guaranteed 1,280-byte MTU (40 bytes IPv6 + 8 bytes UDP headers).
    public var maximumDatagramSize = 1232
    /// A larger datagram size to try once connected (path MTU probing): a padded PING of
    /// this size, and when it is acknowledged the connection sends datagrams this large.
    /// 1,452 bytes fills a 1,500-byte MTU under IPv6; an endpoint probes 20 bytes more
    /// on IPv4 paths, whose header is that much smaller. `nil` keeps `maximumDatagramSize`.
    public var probedDatagramSize: Int? = 1452
    /// How far beyond what the application has read the peer may send; at most
    /// ``maximumReceiveWindow`` (a larger value is taken as that).
    public var receiveWindow = 4 * 1024 * 1024
    /// 1 GiB: stream offsets travel as their low 32 bits, so what is in flight must
    /// stay within 2 GiB of the receiver's next byte.
    public static let maximumReceiveWindow = 1 << 30
    public var congestionControl = PTCPCongestionControl.bbr
    /// Longest the receiver holds an acknowledgement (it says how long, so RTT samples
    /// stay exact).
    public var maximumAckDelay: Duration = .milliseconds(5)
    /// Acknowledge at once after this many packets that ask for it.
    public var ackEveryPackets = 4
    /// A connection that hears nothing for this long is closed with an error.
    public var idleTimeout: Duration = .seconds(30)
    /// Send a ping after this long without sending, to keep NAT mappings open and to
    /// find dead peers.
    public var keepaliveInterval: Duration = .seconds(10)
    /// The retransmission timeout before any RTT sample (the SYN's): RFC 6298's 1 s.
    /// Hole punching uses less, since its first SYN is often dropped by design.
    public var initialRetransmissionTimeout: Duration = .seconds(1)
    /// A handshake that gets no answer for this long fails.
    public var handshakeTimeout: Duration = .seconds(10)
    /// How long a connection closed on both sides keeps answering the peer's
    /// retransmissions after it last heard from it (TCP's TIME-WAIT): an acknowledgement
    /// of the peer's last bytes may have been lost, and the peer backs off before asking again.
    public var linger: Duration = .seconds(10)
    /// Accepted connections still in their handshake, in all and from one IP address:
    /// SYNs beyond these are dropped, so that a flood of SYNs with new source ids cannot
    /// make an endpoint hold (and run TLS for) unbounded half-open connections.
    public var maximumHalfOpen = 256
    public var maximumHalfOpenPerHost = 16

    public init() {}
}

import Logging
import NIOCore
import NIOPosix

/// The presence server's UDP side: answers address-discovery requests with the
/// address each came from (``AddressDiscoveryMessage``). Stateless; anything else is
/// ignored.
final class AddressReflector: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    /// Binds `host:port` (UDP) and answers there until the channel closes.
    static func bind(host: String, port: Int, group: any EventLoopGroup) async throws -> any Channel {
        try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AddressReflector()) }
            }
            .bind(host: host, port: port).get()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard case .request(let transaction)? = AddressDiscoveryMessage(decoding: envelope.data.readableBytesView),
              let seen = HostPort(envelope.remoteAddress),
              let answer = AddressDiscoveryMessage.answer(transaction: transaction, address: seen).bytes else { return }
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: answer))),
                              promise: nil)
    }

    /// A datagram the kernel could not deliver (ICMP unreachable) is no reason to stop.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

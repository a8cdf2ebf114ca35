import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP relay on loopback that forwards one connection at a time to `target` and
/// records every byte in both directions — a packet capture at the socket level.
final class RecordingRelay: Sendable {
    let port: Int
    private let server: any Channel
    private let captured = NIOLockedValueBox<[UInt8]>([])
    private let forwards = NIOLockedValueBox<[Forward]>([])

    /// Connections accepted so far.
    var connectionCount: Int { forwards.withLockedValue { $0.count / 2 } }

    /// The connections open now stop carrying bytes either way, without closing: a
    /// path that died with nothing to say so (a NAT that forgot its mapping). New
    /// connections are carried as before.
    func silenceOpenConnections() {
        forwards.withLockedValue { $0.forEach { $0.silent.withLockedValue { $0 = true } } }
    }

    /// Everything that crossed the relay so far, both directions, in arrival order.
    var bytes: [UInt8] { captured.withLockedValue { $0 } }

    init(to targetPort: Int) async throws {
        let captured = self.captured
        let forwards = self.forwards
        server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { inbound in
                inbound.setOption(.autoRead, value: false).flatMap {
                    ClientBootstrap(group: inbound.eventLoop)
                        .channelInitializer { outbound in
                            let forward = Forward(to: inbound, captured: captured)
                            forwards.withLockedValue { $0.append(forward) }
                            return outbound.pipeline.addHandler(forward)
                        }
                        .connect(host: "127.0.0.1", port: targetPort)
                }.flatMap { outbound in
                    let forward = Forward(to: outbound, captured: captured)
                    forwards.withLockedValue { $0.append(forward) }
                    return inbound.pipeline.addHandler(forward).flatMap {
                        inbound.setOption(.autoRead, value: true)
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = server.localAddress!.port!
    }

    func close() async {
        try? await server.close()
    }

    private final class Forward: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: any Channel
        let captured: NIOLockedValueBox<[UInt8]>
        let silent = NIOLockedValueBox(false)

        init(to peer: any Channel, captured: NIOLockedValueBox<[UInt8]>) {
            self.peer = peer
            self.captured = captured
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            if silent.withLockedValue({ $0 }) { return }
            captured.withLockedValue { $0 += buffer.readableBytesView }
            peer.writeAndFlush(buffer, promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            peer.close(promise: nil)
        }
    }
}

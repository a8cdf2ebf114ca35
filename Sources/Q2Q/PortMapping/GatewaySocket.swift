import NIOCore
import NIOPosix

/// A UDP socket connected to the gateway's port-mapping port, for one request and its
/// answer at a time. Connected, so that the kernel drops datagrams from anyone else,
/// and an ICMP "port unreachable" (no mapping service on the gateway) ends the wait at
/// once instead of after every retransmission.
final class GatewaySocket: Sendable {
    private enum Event: Sendable {
        case datagram([UInt8])
        /// The retransmission timer of attempt `n` ran out.
        case timeout(Int)
    }

    private let channel: any Channel
    private let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation

    private init(channel: any Channel, events: AsyncStream<Event>, continuation: AsyncStream<Event>.Continuation) {
        self.channel = channel
        self.events = events
        self.continuation = continuation
    }

    static func open(to gateway: SocketAddress, group: any EventLoopGroup) async throws -> GatewaySocket {
        // A few datagrams at most are ever in flight; a flood from the gateway is dropped.
        let (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(16))
        let channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation: continuation))
                }
            }
            .connect(to: gateway).get()
        return GatewaySocket(channel: channel, events: events, continuation: continuation)
    }

    /// Our address on the path to the gateway (PCP names it in every request).
    var localAddress: SocketAddress? { channel.localAddress }

    /// Sends `request`, again after each of `timeouts` without an answer, and returns the
    /// first datagram `answer` makes something of; `nil` when none came (or the gateway
    /// refused the datagrams). `answer` sees every datagram and says why it ignores one.
    /// It runs on the caller's actor, whose state `answer` may use.
    nonisolated(nonsending) func exchange<Answer>(_ request: [UInt8], timeouts: [Duration],
                          answer: ([UInt8]) -> Answer?) async throws -> Answer? {
        guard let remote = channel.remoteAddress else { return nil }
        var iterator = events.makeAsyncIterator()
        for (attempt, timeout) in timeouts.enumerated() {
            let envelope = AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: request))
            do {
                try await channel.writeAndFlush(envelope)
            } catch {
                // Closed by an ICMP "port unreachable" for an earlier datagram: nobody
                // speaks port mapping there.
                return nil
            }
            let timer = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [continuation] in
                continuation.yield(.timeout(attempt))
            }
            defer { timer.cancel() }
            waiting: while let event = await iterator.next() {
                switch event {
                case .datagram(let bytes):
                    if let found = answer(bytes) { return found }
                case .timeout(let expired):
                    if expired == attempt { break waiting }
                }
            }
            if Task.isCancelled { throw CancellationError() }
            if channel.isActive == false { return nil }
        }
        return nil
    }

    func close() {
        continuation.finish()
        channel.close(promise: nil)
    }

    /// Hands each datagram to the stream; a socket error (ICMP unreachable) ends it.
    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let continuation: AsyncStream<Event>.Continuation

        init(continuation: AsyncStream<Event>.Continuation) { self.continuation = continuation }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            // Nothing a gateway sends is longer than PCP's maximum.
            guard envelope.data.readableBytes <= PCPMapMessage.maximumSize else { return }
            continuation.yield(.datagram(Array(envelope.data.readableBytesView)))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            continuation.finish()
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            continuation.finish()
        }
    }
}

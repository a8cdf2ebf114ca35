import AMP
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// The direct (`tcp@`) path: a listener's TCP port, and dialing it.
enum DirectPaths {
    /// Listens on `host:port` for `listener`; every connection runs ``PathHandshake``.
    static func bindAcceptor(host: String, port: Int, listener: Q2QListener, group: any EventLoopGroup,
                             logger: Logger) async throws -> any Channel {
        let tls = try listener.tlsContext()
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .ipv6Only(binding: host)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TCPGracefulClose())
                    try PathHandshake.installAcceptor(on: channel, for: listener, tls: tls, logger: logger)
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Dials `address` and runs ``PathHandshake/claim``. Cancellation closes the path,
    /// also while the TCP connection is still being made (a SYN towards a filtering NAT
    /// gets no answer, and another method has usually won by then).
    static func dial(_ address: HostPort, as identity: Q2QIdentity, peer: Q2QAddress, authority: Q2QCertificate,
                     listener ticket: @escaping @Sendable () async throws -> ListenerClaim, service: String, group: any EventLoopGroup, logger: Logger,
                     connectTimeout: TimeAmount = .seconds(10)) async throws -> Q2QPath {
        // Paths come from peers and their servers: only addresses are dialled, never a
        // name some resolver would turn into whatever it likes (review L3).
        guard address.hostIsIPAddress else {
            throw Q2QNodeError("\(Q2QMethod.tcp(address)) names a host, not an address: not dialled")
        }
        let connecting = NIOLockedValueBox<(any Channel)?>(nil)
        return try await withTaskCancellationHandler {
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .connectTimeout(connectTimeout)
                .channelInitializer { channel in
                    connecting.withLockedValue { $0 = channel }
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(TCPGracefulClose())
                    }
                }
                .connect(host: address.host, port: address.port).get()
            try Task.checkCancellation()
            return try await PathHandshake.claim(on: channel, as: identity, peer: peer, authority: authority,
                                                 listener: ticket, service: service, method: .tcp(address), logger: logger)
        } onCancel: {
            connecting.withLockedValue { $0 }?.close(promise: nil)
        }
    }
}

/// Sits below TLS on a `tcp@` path and makes its ends graceful:
/// - a half-close of our output goes out as TLS's close_notify only, and TCP's FIN waits
///   until the peer's input ends too (or the full close): a peer whose reading is paused
///   (backpressure) would otherwise see TCP's end of input before it has decrypted the
///   close_notify queued ahead of it, and NIOSSL would report an unclean shutdown;
/// - a close first lets what is queued reach the kernel (a socket's close drops it):
///   NIOSSL closes at once when the peer's close_notify came first, which would cut
///   off the tail of a stream still being written.
/// Virtual and PTCP channels already keep their writes through a close.
final class TCPGracefulClose: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = ByteBuffer

    /// Longest a close waits for queued bytes (a peer that stopped reading).
    static let drainLimit: TimeAmount = .seconds(10)

    private var outputClosed = false
    private var closing: EventLoopFuture<Void>?

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            // What TLS wrote for the half-close (close_notify) still goes out.
            outputClosed = true
            context.flush()
            promise?.succeed()
        case .input:
            context.close(mode: .input, promise: promise)
        case .all:
            closeGracefully(context: context, promise: promise)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        // Both ways are over: our close_notify went out, and the peer's TCP ended.
        if case ChannelEvent.inputClosed = event, outputClosed {
            closeGracefully(context: context, promise: nil)
        }
    }

    private func closeGracefully(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        if let closing {
            if let promise { closing.cascade(to: promise) }
            return
        }
        let closed = context.eventLoop.makePromise(of: Void.self)
        closing = closed.futureResult
        if let promise { closed.futureResult.cascade(to: promise) }
        // Write promises complete in order: this one, once everything before it is out.
        let drained = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer()), promise: drained)
        let loop = context.eventLoop.assumeIsolated()
        var done = false
        let closeNow = {
            guard !done else { return }
            done = true
            context.close(mode: .all, promise: closed)
        }
        let timeout = loop.scheduleTask(in: Self.drainLimit) { closeNow() }
        drained.futureResult.assumeIsolated().whenComplete { _ in
            timeout.cancel()
            closeNow()
        }
    }
}

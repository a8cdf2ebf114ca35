import AMP
import Logging
import NIOCore

/// A path that won its race and was claimed: the application's end of it, and what it
/// connects. ``Q2QNode/connect(from:to:service:methods:)`` hands out the byte-stream
/// form as a ``Q2QStream``; the connection cache keeps the AMP form.
struct Q2QPath: Sendable {
    enum End: Sendable {
        case bytes(NIOAsyncChannel<ByteBuffer, ByteBuffer>)
        case amp(AMPConnection)
    }

    var end: End
    var local: Q2QAddress
    var peer: Q2QAddress
    var service: String
    var method: Q2QMethod

    /// The channel under either form (to close a path that lost its race).
    var channel: any Channel {
        switch end {
        case .bytes(let stream): stream.channel
        case .amp(let connection): connection.channel
        }
    }

    /// The byte-stream form; a path adopted as AMP is not one (a programming error).
    var stream: Q2QStream {
        guard case .bytes(let channel) = end else { preconditionFailure("an AMP path is not a byte stream") }
        return Q2QStream(channel: channel, local: local, peer: peer, service: service, method: method)
    }

    var amp: AMPConnection {
        guard case .amp(let connection) = end else { preconditionFailure("a byte-stream path is not AMP") }
        return connection
    }
}

/// What a claimed path becomes. It is made on the channel's event loop the moment the
/// claim switches protocols, because the application's first bytes may follow the
/// claim in the same read.
enum PathAdoption: Sendable {
    /// A byte stream for the application (``Q2QStream``).
    case bytes
    /// An AMP connection answering with the responders made for the verified peer.
    case amp(responders: @Sendable (_ peer: Q2QAddress) -> AMPResponders)

    func adopt(_ channel: any Channel, peer: Q2QAddress, isListener: Bool, logger: Logger) throws -> Q2QPath.End {
        switch self {
        case .bytes:
            return .bytes(try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: Q2QStream.channelConfiguration))
        case .amp(let responders):
            // TLS is already in place below: StartTLS is never used, so the TLS role
            // `isTCPServer` implies does not matter beyond being consistent.
            let connection = try AMPConnection.install(on: channel, responders: responders(peer), isTCPServer: isListener, logger: logger)
            try channel.pipeline.syncOperations.addHandler(CloseWhenPeerFinishes())
            return .amp(connection)
        }
    }
}

/// AMP has no half-open state, but its paths can half-close (byte streams need it):
/// once the peer has finished sending (its TLS close_notify) the connection is over,
/// and our close is a half-close whose end the peer answers with its own. (NIOSSL,
/// asked for a full close on a channel that allows half-closure, waits out its 5 s
/// shutdown timeout for the peer's close_notify even after it came.)
private final class CloseWhenPeerFinishes: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    /// Longest a close waits for the peer's answer to our half-close.
    static let answerLimit: TimeAmount = .seconds(5)
    private var closing = false

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if case ChannelEvent.inputClosed = event { context.close(mode: .all, promise: nil) }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard case .all = mode, !closing else {
            context.close(mode: mode, promise: promise)
            return
        }
        closing = true
        if let promise { context.channel.closeFuture.cascade(to: promise) }
        let channel = context.channel
        let fallback = context.eventLoop.scheduleTask(in: Self.answerLimit) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in fallback.cancel() }
        let halfClosed = context.eventLoop.makePromise(of: Void.self)
        halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }
        context.close(mode: .output, promise: halfClosed)
    }
}

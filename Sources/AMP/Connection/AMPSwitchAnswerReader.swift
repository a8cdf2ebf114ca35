import NIOCore

/// Reads the answer to a protocol-switching command that was sent pipelined (see
/// ``AMPConnection/switchProtocolPipelined(_:_:install:)``): it sits in front of the
/// new protocol, which already owns the channel, and holds back what arrives until the
/// peer's answer box has been read. An answer lets the bytes behind it through and
/// removes this handler; an error answer, or anything else, closes the channel, and
/// the new protocol sees why in `errorCaught`.
final class AMPSwitchAnswerReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let tag: Int
    private var parser: AMPBoxParser
    private var received = ByteBuffer()
    private var reply: EventLoopPromise<AMPReply>?

    init(tag: Int, limits: AMPLimits, reply: EventLoopPromise<AMPReply>) {
        self.tag = tag
        self.parser = AMPBoxParser(limits: limits)
        self.reply = reply
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let reply else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        received.writeBuffer(&bytes)
        let box: AMPBox
        do {
            guard let parsed = try parser.nextBox(from: &received) else { return }
            box = parsed
        } catch {
            refuse(AMPConnectionError.badResponse("malformed answer to a protocol switch: \(error)"), context: context)
            return
        }
        let reserved = AMPReservedKeys(box)
        if let answer = reserved.answer, AMPChannelHandler.parseTag(answer) == tag {
            self.reply = nil
            reply.succeed(.answer(box))
            if received.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(received))
                received = ByteBuffer()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } else if let error = reserved.error, AMPChannelHandler.parseTag(error) == tag,
                  let code = reserved.errorCode, let description = reserved.errorDescription {
            let remote = AMPRemoteError(code: String(buffer: code), description: String(buffer: description))
            self.reply = nil
            reply.succeed(.error(code: remote.code, description: remote.errorDescription))
            refuse(remote, context: context)
        } else {
            refuse(AMPConnectionError.badResponse("expected the answer to the protocol switch"), context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        reply?.fail(error)
        reply = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        reply?.fail(AMPConnectionError.connectionClosed(reason: "connection lost before the protocol switch was answered"))
        reply = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        reply?.fail(AMPConnectionError.connectionClosed(reason: "the protocol switch was abandoned"))
        reply = nil
    }

    private func refuse(_ error: any Error, context: ChannelHandlerContext) {
        reply?.fail(error)
        reply = nil
        received = ByteBuffer()
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }
}

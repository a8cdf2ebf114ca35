import NIOCore
import Synchronization

/// One end of a virtual channel: a NIO `Channel` whose bytes travel as `write` boxes
/// on a parent AMP connection, so TLS and any application pipeline run on it exactly
/// as on a TCP socket. Modelled on swift-nio-ssh's child channels.
///
/// Flow control is credit-based (``ChannelWindow``): bytes that arrive while the
/// pipeline has not asked to read are held, and are granted back to the peer as
/// `credit` only once the pipeline has taken them, so at most one window is held
/// here. Writes go to the parent while we have credit, the peer has not choked us (the
/// original's `Choke`, still obeyed) and the parent socket takes more; otherwise they
/// wait here, and the channel reports itself not writable past `writeBufferHigh`.
///
/// All state is confined to the parent's event loop.
final class VirtualChannel: Channel, ChannelCore, @unchecked Sendable {
    let id: Int
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    let parent: (any Channel)?
    private let multiplexer: VirtualChannelMultiplexer
    private var _pipeline: ChannelPipeline!
    private let closePromise: EventLoopPromise<Void>
    private let writable = Atomic<Bool>(true)
    private let active = Atomic<Bool>(false)

    static let writeBufferHigh = 256 * 1024
    static let writeBufferLow = 64 * 1024
    /// The largest `body` one `write` box may carry.
    static let maximumBody = 65_535

    private var autoRead = true
    private var readRequested = false
    private var pendingReads = CircularBuffer<ByteBuffer>()
    private var receiveWindow: ReceiveWindow
    private var credit = SendCredit(initial: 0)
    private var chokedByPeer = false
    private var pendingWrites = MarkedCircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>(initialCapacity: 8)
    private var pendingWriteBytes = 0
    /// How much of the first pending write has gone out (credit may cover only part of it).
    private var sentOfFirstWrite = 0
    private var closed = false
    /// No more writes are taken (half-closed, or closing once what is queued is sent).
    private var outputClosed = false
    /// A close that waits for the queued writes to go out first (they may be choked).
    private var closeWhenSent: (mode: CloseMode, promise: EventLoopPromise<Void>?)?
    private var deliveryScheduled = false
    private var readDeliveryScheduled = false
    /// Bytes handed to the pipeline in all (for ``flowDescription``).
    private var deliveredInAll = 0
    /// The most one read delivers (as a socket delivers at most its buffer).
    static let readBatch = 64 * 1024
    /// Writes go out in bursts of this much, so that the event loop also reads the
    /// peer's Choke between them.
    static let writeBurst = 256 * 1024

    init(id: Int, multiplexer: VirtualChannelMultiplexer, parent: any Channel, receiveWindow: Int) {
        self.id = id
        self.receiveWindow = ReceiveWindow(size: receiveWindow)
        self.multiplexer = multiplexer
        self.parent = parent
        self.eventLoop = parent.eventLoop
        self.allocator = parent.allocator
        self.closePromise = parent.eventLoop.makePromise()
        self._pipeline = ChannelPipeline(channel: self)
    }

    // MARK: Channel

    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var pipeline: ChannelPipeline { _pipeline }
    var localAddress: SocketAddress? { parent?.localAddress }
    var remoteAddress: SocketAddress? { parent?.remoteAddress }
    var isWritable: Bool { writable.load(ordering: .relaxed) }
    var isActive: Bool { active.load(ordering: .relaxed) }
    var _channelCore: any ChannelCore { self }
    var syncOptions: (any NIOSynchronousChannelOptions)? { self }

    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        if eventLoop.inEventLoop {
            return eventLoop.makeCompletedFuture { try setOption0(option, value: value) }
        }
        return eventLoop.submit { try self.setOption0(option, value: value) }
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        if eventLoop.inEventLoop {
            return eventLoop.makeCompletedFuture { try getOption0(option) }
        }
        return eventLoop.submit { try self.getOption0(option) }
    }

    private func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        eventLoop.preconditionInEventLoop()
        switch option {
        case _ as ChannelOptions.Types.AutoReadOption:
            autoRead = value as! Bool
            if autoRead { read() }
        default:
            throw ChannelError.operationUnsupported
        }
    }

    private func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        eventLoop.preconditionInEventLoop()
        switch option {
        case _ as ChannelOptions.Types.AutoReadOption: return autoRead as! Option.Value
        // TLS carries the half-close (close_notify) inside the channel, so the remote
        // side's end of output is an event, not a close.
        case _ as ChannelOptions.Types.AllowRemoteHalfClosureOption: return true as! Option.Value
        default: throw ChannelError.operationUnsupported
        }
    }

    // MARK: ChannelCore

    func localAddress0() throws -> SocketAddress {
        guard let address = localAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    func remoteAddress0() throws -> SocketAddress {
        guard let address = remoteAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    func register0(promise: EventLoopPromise<Void>?) { promise?.succeed() }
    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) { promise?.succeed() }
    func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func channelRead0(_ data: NIOAny) {}
    func errorCaught0(error: any Error) {}

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closed, !outputClosed else {
            promise?.fail(closed ? ChannelError.ioOnClosedChannel : ChannelError.outputClosed)
            return
        }
        let buffer = unwrapData(data, as: ByteBuffer.self)
        pendingWrites.append((buffer, promise))
        pendingWriteBytes += buffer.readableBytes
        updateWritability()
    }

    func flush0() {
        pendingWrites.mark()
        deliverWrites()
    }

    func read0() {
        guard !closed else { return }
        readRequested = true
        // Delivered on the next turn of the loop, as a socket would: a pipeline that asks
        // to read again from inside a delivery does not recurse.
        if !pendingReads.isEmpty { scheduleReadDelivery() }
    }

    func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .input {
            promise?.fail(ChannelError.operationUnsupported)
            return
        }
        guard !closed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        if mode == .output, outputClosed {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        // Whatever was written goes out first, still under flow control; then, for
        // `.output`, nothing more (the end of output already went in-band as TLS
        // close_notify and the channel stays open for the peer's bytes), or for `.all`,
        // `close`.
        outputClosed = true
        pendingWrites.mark()
        if let earlier = closeWhenSent {
            // A full close while a half-close still waits: both complete together.
            let combined = promise ?? eventLoop.makePromise()
            if let earlierPromise = earlier.promise { combined.futureResult.cascade(to: earlierPromise) }
            closeWhenSent = (.all, combined)
        } else {
            closeWhenSent = (mode, promise)
        }
        deliverWrites()
    }

    // MARK: Driven by the multiplexer

    /// The channel exists at both ends, and the peer granted `sendCredit`: start the pipeline.
    func activate(sendCredit: Int) {
        credit = SendCredit(initial: sendCredit)
        active.store(true, ordering: .relaxed)
        pipeline.fireChannelRegistered()
        pipeline.fireChannelActive()
        if autoRead { pipeline.read() }
    }

    func received(_ body: ByteBuffer) {
        guard !closed else { return }
        do throws(ChannelWindowError) {
            try receiveWindow.received(body.readableBytes)
        } catch {
            peerBrokeWindow(error)
            return
        }
        pendingReads.append(body)
        if readRequested { deliverReads() }
    }

    func peerGranted(_ bytes: Int) {
        guard !closed else { return }
        do throws(ChannelWindowError) {
            try credit.grant(bytes)
        } catch {
            peerBrokeWindow(error)
            return
        }
        deliverWrites()
    }

    func peerChoked(_ choked: Bool) {
        chokedByPeer = choked
        deliverWrites()
        updateWritability()
    }

    func parentWritabilityChanged() {
        deliverWrites()
        updateWritability()
    }

    /// The peer closed the channel, or the parent connection is gone.
    func remoteClosed() {
        guard !closed else { return }
        finishClose()
    }

    /// Flow-control state, for diagnosing a stall. On the event loop.
    var flowDescription: String {
        "channel \(id): credit \(credit.available), queued to send \(pendingWriteBytes) (flushed: \(pendingWrites.hasMark)), "
            + "writable \(isWritable), choked \(chokedByPeer), parent writable \(multiplexer.parentIsWritable), "
            + "waiting for the parent \(multiplexer.isWaitingForWritable), delivery scheduled \(deliveryScheduled); held to read "
            + "\(pendingReads.reduce(0) { $0 + $1.readableBytes }), read requested \(readRequested), "
            + "read delivery scheduled \(readDeliveryScheduled), delivered in all \(deliveredInAll), "
            + "peer may send \(receiveWindow.outstanding), "
            + "consumed since the last grant \(receiveWindow.consumedSinceGrant), closed \(closed)"
    }

    // MARK: Internals

    /// Delivers what is held, at most `readBatch` bytes a time unless `all` (a closing
    /// channel hands over everything): like a socket's read, so that TLS above decrypts
    /// in buffers it can reuse rather than in one window-sized lump.
    private func deliverReads(all: Bool = false) {
        readRequested = false
        var delivered = 0
        while all || delivered < Self.readBatch, let buffer = pendingReads.popFirst() {
            delivered += buffer.readableBytes
            pipeline.fireChannelRead(buffer)
        }
        pipeline.fireChannelReadComplete()
        deliveredInAll += delivered
        // The pipeline took them (its own backpressure stops asking to read): the peer
        // may send as much again.
        if !closed, let grant = receiveWindow.consumed(delivered) {
            multiplexer.sendCredit(id, grant)
        }
        if autoRead, !closed { pipeline.read() }
    }

    private func deliverWrites() {
        guard !closed else { return }
        var budget = Self.writeBurst
        while pendingWrites.hasMark, !chokedByPeer, multiplexer.parentIsWritable, budget > 0,
              credit.available > 0, let (buffer, promise) = pendingWrites.first {
            let unsent = buffer.readableBytes - sentOfFirstWrite
            let count = credit.take(upTo: min(unsent, budget))
            var rest = buffer.getSlice(at: buffer.readerIndex + sentOfFirstWrite, length: count)!
            while rest.readableBytes > 0 {
                let chunk = rest.readSlice(length: min(rest.readableBytes, Self.maximumBody))!
                multiplexer.sendWrite(id, chunk)
            }
            sentOfFirstWrite += count
            pendingWriteBytes -= count
            budget -= count
            if sentOfFirstWrite == buffer.readableBytes {
                _ = pendingWrites.removeFirst()
                sentOfFirstWrite = 0
                promise?.succeed()
            }
        }
        if pendingWrites.hasMark {
            // Waiting for credit or an Unchoke needs nothing more: their arrival delivers.
            if !chokedByPeer, credit.available > 0 {
                if multiplexer.parentIsWritable {
                    scheduleDelivery()
                } else {
                    multiplexer.notifyWhenParentWritable()
                }
            }
        } else if pendingWrites.isEmpty, let request = closeWhenSent {
            closeWhenSent = nil
            if request.mode == .all {
                multiplexer.sendClose(id)
                finishClose()
            }
            request.promise?.succeed()
        }
        updateWritability()
    }

    private func scheduleReadDelivery() {
        guard !readDeliveryScheduled else { return }
        readDeliveryScheduled = true
        eventLoop.execute { [self] in
            readDeliveryScheduled = false
            if readRequested, !closed, !pendingReads.isEmpty { deliverReads() }
        }
    }

    private func scheduleDelivery() {
        guard !deliveryScheduled else { return }
        deliveryScheduled = true
        eventLoop.execute { [self] in
            deliveryScheduled = false
            deliverWrites()
        }
    }

    private func updateWritability() {
        let wasWritable = isWritable
        let nowWritable = !closed && !outputClosed && !chokedByPeer
            && pendingWriteBytes < (wasWritable ? Self.writeBufferHigh : Self.writeBufferLow)
        if nowWritable != wasWritable {
            writable.store(nowWritable, ordering: .relaxed)
            pipeline.fireChannelWritabilityChanged()
        }
    }

    /// The peer (or the relay) broke the window rules: the channel cannot be trusted to
    /// stay bounded, so it is closed.
    private func peerBrokeWindow(_ error: ChannelWindowError) {
        pipeline.fireErrorCaught(error)
        multiplexer.sendClose(id)
        finishClose()
    }

    private func finishClose() {
        closed = true
        // Bytes that arrived before the close are still the application's.
        if !pendingReads.isEmpty { deliverReads(all: true) }
        while let (_, promise) = pendingWrites.popFirst() { promise?.fail(ChannelError.ioOnClosedChannel) }
        pendingWriteBytes = 0
        sentOfFirstWrite = 0
        if let request = closeWhenSent {
            closeWhenSent = nil
            request.promise?.succeed()
        }
        active.store(false, ordering: .relaxed)
        writable.store(false, ordering: .relaxed)
        pipeline.fireChannelInactive()
        pipeline.fireChannelUnregistered()
        eventLoop.execute { [self] in
            removeHandlers(pipeline: pipeline)
            closePromise.succeed()
            multiplexer.remove(id)
        }
    }
}

extension VirtualChannel: NIOSynchronousChannelOptions {
    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        try setOption0(option, value: value)
    }

    func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        try getOption0(option)
    }
}

import NIOCore
import Synchronization

/// One PTCP connection as a NIO `Channel`, so that TLS (NIOSSLHandler) and any
/// application pipeline run on it exactly as on a TCP socket. The sans-I/O
/// ``PTCPConnection`` does the protocol; this class feeds it writes, datagrams and
/// timer ticks, and hands its datagrams to the endpoint's UDP socket.
///
/// Writes are accepted into the core while it holds less than `coreSendLimit` unsent
/// bytes, the rest wait here and make the channel unwritable past `writeBufferHigh`.
/// Reads are handed up only when the pipeline asks (autoRead or `read()`); until then
/// bytes stay in the core, whose receive window then holds the peer back.
///
/// All state is confined to the endpoint's event loop.
final class PTCPChannel: Channel, ChannelCore, @unchecked Sendable {
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    let parent: (any Channel)?
    // Weak: the endpoint may be closed (its handler gone) while a timer of ours is pending.
    private weak var dispatcher: PTCPDispatcher?
    private var _pipeline: ChannelPipeline!
    private let closePromise: EventLoopPromise<Void>
    private let writable = Atomic<Bool>(true)
    private let active = Atomic<Bool>(false)
    let remote: SocketAddress
    private(set) var core: PTCPConnection
    /// Completed when the handshake is done (connect waits on it).
    let established: EventLoopPromise<Void>

    static let coreSendLimit = 1024 * 1024
    static let writeBufferHigh = 256 * 1024
    static let writeBufferLow = 64 * 1024
    static let readBatch = 64 * 1024

    private var autoRead = true
    private var readRequested = false
    private var pendingWrites = MarkedCircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>(initialCapacity: 8)
    private var pendingWriteBytes = 0
    private var outputClosed = false
    private var finishWhenWritten = false
    private var channelClosed = false
    private var timer: (deadline: PTCPInstant, task: Scheduled<Void>)?
    private var readDeliveryScheduled = false
    private var establishedResolved = false

    init(core: PTCPConnection, remote: SocketAddress, dispatcher: PTCPDispatcher, parent: any Channel) {
        self.core = core
        self.remote = remote
        self.dispatcher = dispatcher
        self.parent = parent
        self.eventLoop = parent.eventLoop
        self.allocator = parent.allocator
        self.closePromise = parent.eventLoop.makePromise()
        self.established = parent.eventLoop.makePromise()
        self._pipeline = ChannelPipeline(channel: self)
    }

    static func now() -> PTCPInstant {
        PTCPInstant(nanoseconds: Int64(NIODeadline.now().uptimeNanoseconds))
    }

    // MARK: Channel

    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var pipeline: ChannelPipeline { _pipeline }
    var localAddress: SocketAddress? { parent?.localAddress }
    var remoteAddress: SocketAddress? { remote }
    var isWritable: Bool { writable.load(ordering: .relaxed) }
    var isActive: Bool { active.load(ordering: .relaxed) }
    var _channelCore: any ChannelCore { self }
    var syncOptions: (any NIOSynchronousChannelOptions)? { self }

    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        eventLoop.submit { try self.setOption0(option, value: value) }
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        eventLoop.submit { try self.getOption0(option) }
    }

    private func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        eventLoop.preconditionInEventLoop()
        switch option {
        case _ as ChannelOptions.Types.AutoReadOption:
            autoRead = value as! Bool
            if autoRead { read() }
        case _ as ChannelOptions.Types.AllowRemoteHalfClosureOption:
            break   // always allowed: the peer's FIN is an event
        default:
            throw ChannelError.operationUnsupported
        }
    }

    private func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        eventLoop.preconditionInEventLoop()
        switch option {
        case _ as ChannelOptions.Types.AutoReadOption: return autoRead as! Option.Value
        case _ as ChannelOptions.Types.AllowRemoteHalfClosureOption: return true as! Option.Value
        case _ as PTCPChannelOptions.Types.StatisticsOption: return core.statistics as! Option.Value
        default: throw ChannelError.operationUnsupported
        }
    }

    // MARK: ChannelCore

    func localAddress0() throws -> SocketAddress {
        guard let address = localAddress else { throw ChannelError.operationUnsupported }
        return address
    }

    func remoteAddress0() throws -> SocketAddress { remote }
    func register0(promise: EventLoopPromise<Void>?) { promise?.succeed() }
    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) { promise?.succeed() }
    func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func channelRead0(_ data: NIOAny) {}
    func errorCaught0(error: any Error) {}

    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !channelClosed, !outputClosed else {
            promise?.fail(channelClosed ? ChannelError.ioOnClosedChannel : ChannelError.outputClosed)
            return
        }
        let buffer = unwrapData(data, as: ByteBuffer.self)
        pendingWrites.append((buffer, promise))
        pendingWriteBytes += buffer.readableBytes
        updateWritability()
    }

    func flush0() {
        pendingWrites.mark()
        pump()
    }

    func read0() {
        guard !channelClosed else { return }
        readRequested = true
        if core.readableBytes > 0 { scheduleReadDelivery() }
    }

    func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard !channelClosed else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        switch mode {
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        case .output:
            // What was written goes out, then our FIN; the peer's bytes still come in.
            closeOutput()
            promise?.succeed()
        case .all:
            // Like a socket's close: what was written is still delivered (the endpoint
            // keeps the connection until it ends), the application sees it closed now.
            closeOutput()
            if !core.isEstablished {
                core.abort()   // nothing to deliver yet: tell the peer we are gone
                pump()
            }
            finishClose(error: nil, keepWrites: true)
            promise?.succeed()
        }
    }

    /// No more writes; our FIN follows what was written.
    private func closeOutput() {
        outputClosed = true
        finishWhenWritten = true
        pendingWrites.mark()
        pump()
    }

    // MARK: Driven by the dispatcher

    var connectionID: UInt64 { core.localID }
    var peerConnectionID: UInt64 { core.peerID }

    /// The pipeline is set up: the channel counts as registered (it is unregistered on
    /// close), and the handshake starts or answers. It is active from the start, before
    /// the handshake completes: what a client writes at once rides in its SYN (early
    /// data), and an acceptor can answer it before the client's next packet.
    /// ``established`` says when the handshake is done.
    func start() {
        pipeline.fireChannelRegistered()
        if !channelClosed {
            active.store(true, ordering: .relaxed)
            pipeline.fireChannelActive()
            if autoRead { pipeline.read() }
        }
        pump()
    }

    /// Set while the dispatcher holds this channel for a pump at the end of its read.
    var pumpPending = false

    /// Feeds a datagram to the core without running it: the dispatcher pumps once after
    /// the whole batch of a socket read, so that one acknowledgement (and one write)
    /// answers many datagrams instead of one every few, as GRO does for kernel TCP.
    func received(_ datagram: ByteBuffer, now: PTCPInstant) {
        core.receive(datagram.readableBytesView, now: now)
    }

    /// Runs the core: hands it writes, reacts to its events, sends its datagrams and
    /// sets the timer for its next deadline.
    func pump() {
        guard dispatcher != nil else {
            // The endpoint's socket is gone: nothing can be sent or received any more.
            timer?.task.cancel()
            timer = nil
            if !channelClosed { finishClose(error: nil) }
            return
        }
        let now = Self.now()
        moveWritesIntoCore()
        while let event = core.nextEvent() {
            switch event {
            case .connected:
                guard !channelClosed else { break }
                resolveEstablished(nil)
            case .readable:
                if readRequested { scheduleReadDelivery() }
            case .peerFinished:
                if !channelClosed { pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
            case .closed(let error):
                if let error, !channelClosed { pipeline.fireErrorCaught(error) }
                if !channelClosed { finishClose(error: error) }
            }
        }
        if channelClosed {
            // Orphaned after close(): nobody reads any more, so drain and drop.
            while core.readChunk(maximum: Int.max) != nil {}
        }
        var sent = false
        while let datagram = core.poll(now: now) {
            dispatcher?.send(datagram, to: remote)
            sent = true
        }
        if sent { dispatcher?.flush() }
        armTimer()
        updateWritability()
        if core.isClosed {
            timer?.task.cancel()
            timer = nil
            dispatcher?.remove(self)
        }
    }

    private func armTimer() {
        guard let deadline = core.nextDeadline else {
            timer?.task.cancel()
            timer = nil
            return
        }
        // A timer already set no later is kept: waking early costs one idle check, while
        // rescheduling on every packet (the pacing deadline moves each time) costs more.
        if let timer, timer.deadline <= deadline { return }
        timer?.task.cancel()
        let task = eventLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(0, deadline.nanoseconds)))) { [self] in
            timer = nil
            core.handleTimeout(now: Self.now())
            pump()
        }
        timer = (deadline, task)
    }

    private func moveWritesIntoCore() {
        while pendingWrites.hasMark, core.unsentBytes < Self.coreSendLimit, let (buffer, promise) = pendingWrites.first {
            _ = pendingWrites.removeFirst()
            pendingWriteBytes -= buffer.readableBytes
            core.write(Array(buffer.readableBytesView))
            promise?.succeed()
        }
        if finishWhenWritten, pendingWrites.isEmpty {
            finishWhenWritten = false
            core.finish()
        }
    }

    private func deliverReads() {
        readRequested = false
        // One buffer per delivery, filled chunk by chunk as the packets brought them.
        var buffer = allocator.buffer(capacity: min(core.readableBytes, Self.readBatch))
        while buffer.readableBytes < Self.readBatch, let chunk = core.readChunk(maximum: Self.readBatch - buffer.readableBytes) {
            buffer.writeBytes(chunk)
        }
        if buffer.readableBytes > 0 { pipeline.fireChannelRead(buffer) }
        pipeline.fireChannelReadComplete()
        pump()   // the window opened: the core may acknowledge or finish now
        if autoRead, !channelClosed { pipeline.read() }
    }

    private func scheduleReadDelivery() {
        guard !readDeliveryScheduled else { return }
        readDeliveryScheduled = true
        eventLoop.execute { [self] in
            readDeliveryScheduled = false
            if readRequested, !channelClosed, core.readableBytes > 0 { deliverReads() }
        }
    }

    private func updateWritability() {
        let wasWritable = isWritable
        let nowWritable = !channelClosed && !outputClosed
            && pendingWriteBytes < (wasWritable ? Self.writeBufferHigh : Self.writeBufferLow)
        if nowWritable != wasWritable {
            writable.store(nowWritable, ordering: .relaxed)
            pipeline.fireChannelWritabilityChanged()
        }
    }

    private func resolveEstablished(_ error: (any Error)?) {
        guard !establishedResolved else { return }
        establishedResolved = true
        if let error { established.fail(error) } else { established.succeed() }
    }

    /// The application's side of the channel ends. `keepWrites`: a graceful close whose
    /// written bytes still go to the core (and out) after the pipeline is gone.
    private func finishClose(error: PTCPConnectionError?, keepWrites: Bool = false) {
        guard !channelClosed else { return }
        channelClosed = true
        resolveEstablished(error ?? ChannelError.ioOnClosedChannel)
        if !keepWrites {
            while let (_, promise) = pendingWrites.popFirst() { promise?.fail(ChannelError.ioOnClosedChannel) }
            pendingWriteBytes = 0
        }
        active.store(false, ordering: .relaxed)
        writable.store(false, ordering: .relaxed)
        pipeline.fireChannelInactive()
        pipeline.fireChannelUnregistered()
        eventLoop.execute { [self] in
            removeHandlers(pipeline: pipeline)
            closePromise.succeed()
        }
    }
}

extension PTCPChannel: NIOSynchronousChannelOptions {
    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        try setOption0(option, value: value)
    }

    func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        try getOption0(option)
    }
}

/// Options particular to PTCP connection channels.
public enum PTCPChannelOptions {
    /// The connection's counters (read-only; still readable after the channel closed).
    public static let statistics = Types.StatisticsOption()

    public enum Types {
        public struct StatisticsOption: ChannelOption, Sendable {
            public typealias Value = PTCPConnection.Statistics
            public init() {}
        }
    }
}

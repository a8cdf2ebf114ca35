import NIOCore
import NIOPosix

/// One UDP socket serving any number of PTCP connections, outgoing and incoming.
///
///     let endpoint = try await PTCPEndpoint.bind(host: "0.0.0.0", port: 0, group: group) { channel in
///         channel.pipeline.addHandler(EchoHandler())          // for each accepted connection
///     }
///     for await channel in endpoint.incoming { … }            // accepted, handshake done
///     let channel = try await endpoint.connect(to: address) { channel in … }
public final class PTCPEndpoint: Sendable {
    public typealias Initializer = @Sendable (any Channel) -> EventLoopFuture<Void>
    /// Sees a datagram that is not PTCP (an address-discovery answer, a hole-punching
    /// probe); called on the socket's event loop.
    public typealias ForeignDatagramHandler = @Sendable (AddressedEnvelope<ByteBuffer>) -> Void

    public let localAddress: SocketAddress
    /// Connections others opened to us, once their handshake completed. It holds the
    /// newest 256 not yet taken (an endpoint whose initializer does all the work need
    /// not read it).
    public let incoming: AsyncStream<any Channel>
    private let channel: any Channel
    private let dispatcher: NIOLoopBound<PTCPDispatcher>
    public let configuration: PTCPConfiguration

    /// Binds a UDP socket. With `accepting`, connections others open are accepted and
    /// set up with it; without, the endpoint only connects out. Datagrams that are not
    /// PTCP go to `foreign` when given (and are dropped and counted otherwise).
    public static func bind(host: String, port: Int, configuration: PTCPConfiguration = .init(),
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                            accepting initializer: Initializer? = nil,
                            foreign: ForeignDatagramHandler? = nil) async throws -> PTCPEndpoint {
        let (stream, continuation) = AsyncStream<any Channel>.makeStream(bufferingPolicy: .bufferingNewest(256))
        // recvmmsg reads 32 datagrams at once, 2 KiB each: room for any datagram we send
        // (a longer one arrives cut short and is dropped). Receive offload (UDP GRO) was
        // measured: no faster through netlab, half as fast on loopback (64 KiB buffers).
        let bootstrap = DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .ipv6Only(binding: host)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 * 1024 * 1024)
            .channelOption(.socketOption(.so_sndbuf), value: 4 * 1024 * 1024)
            .channelOption(.datagramVectorReadMessageCount, value: 32)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 2048))
            .channelOption(.maxMessagesPerRead, value: 8)
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let dispatcher = PTCPDispatcher(configuration: configuration, initializer: initializer, foreign: foreign,
                                                    incoming: continuation)
                    try channel.pipeline.syncOperations.addHandler(dispatcher)
                }
            }
            .bind(host: host, port: port)
            .get()
        let dispatcher = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: PTCPDispatcher.self), eventLoop: channel.eventLoop)
        }.get()
        channel.closeFuture.whenComplete { _ in continuation.finish() }
        return PTCPEndpoint(channel: channel, dispatcher: dispatcher,
                            incoming: stream, configuration: configuration)
    }

    private init(channel: any Channel, dispatcher: NIOLoopBound<PTCPDispatcher>, incoming: AsyncStream<any Channel>,
                 configuration: PTCPConfiguration) {
        self.channel = channel
        self.dispatcher = dispatcher
        self.incoming = incoming
        self.configuration = configuration
        self.localAddress = channel.localAddress!
    }

    /// Opens a connection to the endpoint at `address`; returns once the handshake is
    /// done, with `initializer` already run on the channel. Cancelling the task closes
    /// the connection being opened.
    public func connect(to address: SocketAddress, initializer: @escaping Initializer = { $0.eventLoop.makeSucceededVoidFuture() })
        async throws -> any Channel {
        let dispatcher = self.dispatcher
        let (channel, established) = try await self.channel.eventLoop.submit {
            try dispatcher.value.connect(to: address, initializer: initializer, on: dispatcher.eventLoop)
        }.get()
        return try await withTaskCancellationHandler {
            try await established.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// Whether `channel` is a PTCP connection.
    public static func isConnection(_ channel: any Channel) -> Bool { channel is PTCPChannel }

    /// Sends one datagram that is not PTCP from this endpoint's socket (to seed a NAT
    /// mapping, or to ask a server which address it sees).
    public func send(datagram: ByteBuffer, to address: SocketAddress) async throws {
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: datagram))
    }

    /// Whether the socket is still open.
    public var isOpen: Bool { channel.isActive }

    /// What the socket dropped: datagrams that were not PTCP or named no connection.
    public func droppedDatagrams() async throws -> Int {
        let dispatcher = self.dispatcher
        return try await channel.eventLoop.submit { dispatcher.value.droppedDatagrams }.get()
    }

    /// Closes the socket; connections still open end at once.
    public func close() async {
        try? await channel.close()
    }
}

/// Routes the socket's datagrams to connections by destination id; a SYN (id 0) opens
/// a connection, or reaches the one an earlier copy of it opened.
final class PTCPDispatcher: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private struct SYNKey: Hashable {
        var address: SocketAddress
        var sourceID: UInt64
    }

    let configuration: PTCPConfiguration
    private let initializer: PTCPEndpoint.Initializer?
    private let foreign: PTCPEndpoint.ForeignDatagramHandler?
    private let incoming: AsyncStream<any Channel>.Continuation
    private var context: ChannelHandlerContext?
    private var connections: [UInt64: PTCPChannel] = [:]
    private var bySYN: [SYNKey: UInt64] = [:]
    /// Accepted connections whose handshake is not done, in all and per IP address.
    private var halfOpen = 0
    private var halfOpenPerHost: [String: Int] = [:]
    /// Accepted connections whose pipeline waits until the caller has shown it receives
    /// at its address (the SYN handling in `channelRead` says when).
    private var unvalidated: Set<UInt64> = []
    private(set) var droppedDatagrams = 0
    private var random = SystemRandomNumberGenerator()

    init(configuration: PTCPConfiguration, initializer: PTCPEndpoint.Initializer?, foreign: PTCPEndpoint.ForeignDatagramHandler?,
         incoming: AsyncStream<any Channel>.Continuation) {
        self.configuration = configuration
        self.initializer = initializer
        self.foreign = foreign
        self.incoming = incoming
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// Connections that took datagrams in this read, pumped once when it completes.
    private var awaitingPump: [PTCPChannel] = []
    /// One clock reading for a read's datagrams: they arrived together.
    private var batchTime: PTCPInstant?

    /// Feeds a datagram to its connection, which runs once the read is complete.
    private func deliver(_ datagram: ByteBuffer, to channel: PTCPChannel) {
        let now = batchTime ?? PTCPChannel.now()
        batchTime = now
        channel.received(datagram, now: now)
        if !channel.pumpPending {
            channel.pumpPending = true
            awaitingPump.append(channel)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        batchTime = nil
        let channels = awaitingPump
        awaitingPump.removeAll(keepingCapacity: true)
        for channel in channels {
            channel.pumpPending = false
            channel.pump()
        }
        context.fireChannelReadComplete()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        for channel in connections.values {
            channel.pipeline.fireErrorCaught(ChannelError.ioOnClosedChannel)
            channel.close(promise: nil)
        }
        connections = [:]
        incoming.finish()
        context.fireChannelInactive()
    }

    private func newID() -> UInt64 {
        var id: UInt64
        repeat { id = UInt64.random(in: 1...UInt64.max, using: &random) } while connections[id] != nil
        return id
    }

    /// Starts a connection: the channel at once, and a future that succeeds with it
    /// once the handshake is done (and fails when the channel closes first).
    func connect(to address: SocketAddress, initializer: @escaping PTCPEndpoint.Initializer,
                 on eventLoop: any EventLoop) throws -> (any Channel, EventLoopFuture<any Channel>) {
        guard let context else { throw ChannelError.ioOnClosedChannel }
        let id = newID()
        let core = PTCPConnection(connectingWith: id, configuration: configuration.forPath(to: address), now: PTCPChannel.now())
        let channel = PTCPChannel(core: core, remote: address, dispatcher: self, parent: context.channel)
        connections[id] = channel
        let established = initializer(channel).flatMap {
            channel.start()
            return channel.established.futureResult.map { channel as any Channel }
        }.flatMapError { error in
            channel.close(promise: nil)
            return eventLoop.makeFailedFuture(error)
        }
        return (channel, established)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let bytes = envelope.data.readableBytesView
        guard let id = PTCPPacket.destinationID(of: bytes) else {
            if let foreign {
                foreign(envelope)
            } else {
                droppedDatagrams += 1   // not PTCP v2
            }
            return
        }
        if id != 0 {
            guard let channel = connections[id], channel.remote == envelope.remoteAddress else {
                droppedDatagrams += 1
                return
            }
            deliver(envelope.data, to: channel)
            // Only a caller that got our SYN-ACK knows our connection id: its address is real.
            // (Checked only during a flood: an empty set costs established traffic nothing.)
            if !unvalidated.isEmpty, unvalidated.remove(id) != nil { open(channel) }
            return
        }
        guard let packet = try? PTCPPacket(decoding: bytes), let handshake = packet.handshake else {
            droppedDatagrams += 1
            return
        }
        let key = SYNKey(address: envelope.remoteAddress, sourceID: handshake.sourceID)
        if let existing = bySYN[key], let channel = connections[existing] {
            deliver(envelope.data, to: channel)   // the same SYN again
            return
        }
        let host = envelope.remoteAddress.ipAddress ?? "?"
        guard initializer != nil, halfOpen < configuration.maximumHalfOpen,
              halfOpenPerHost[host, default: 0] < configuration.maximumHalfOpenPerHost else {
            droppedDatagrams += 1
            return
        }
        // Past half the caps, a new caller proves its address before any work beyond the
        // SYN-ACK is done for it (TLS above all): SYN cookies' idea, at the cost of a
        // round trip for callers that come during a flood only.
        let validateFirst = halfOpen >= configuration.maximumHalfOpen / 2
            || halfOpenPerHost[host, default: 0] >= configuration.maximumHalfOpenPerHost / 2
        let localID = newID()
        guard let core = try? PTCPConnection(accepting: packet, localID: localID, configuration: configuration.forPath(to: envelope.remoteAddress),
                                             now: PTCPChannel.now()) else {
            droppedDatagrams += 1
            return
        }
        let channel = PTCPChannel(core: core, remote: envelope.remoteAddress, dispatcher: self, parent: context.channel)
        connections[localID] = channel
        bySYN[key] = localID
        halfOpen += 1
        halfOpenPerHost[host, default: 0] += 1
        let dispatcher = NIOLoopBound(self, eventLoop: context.eventLoop)
        channel.established.futureResult.whenComplete { _ in
            let dispatcher = dispatcher.value
            dispatcher.halfOpen -= 1
            let left = dispatcher.halfOpenPerHost[host, default: 1] - 1
            dispatcher.halfOpenPerHost[host] = left > 0 ? left : nil
        }
        if validateFirst {
            // The SYN-ACK only; the SYN's early data waits in the core, unread.
            unvalidated.insert(localID)
            channel.pump()
        } else {
            open(channel)
        }
    }

    /// Sets up an accepted connection's pipeline and starts it.
    private func open(_ channel: PTCPChannel) {
        guard let initializer else { return }
        let incoming = self.incoming
        initializer(channel).whenComplete { result in
            switch result {
            case .success:
                channel.start()
                channel.established.futureResult.whenSuccess { incoming.yield(channel) }
            case .failure:
                channel.close(promise: nil)
            }
        }
    }

    /// Datagrams to one address, back to back, all but the last exactly `segmentSize`
    /// long: written as one buffer that the kernel cuts into datagrams (UDP GSO), which
    /// saves a system call and a route lookup per datagram.
    private var batch: (address: SocketAddress, buffer: ByteBuffer, segmentSize: Int, count: Int, closed: Bool)?
    private static let gso = System.supportsUDPSegmentationOffload
    private static let maximumBatch = 32

    func send(_ datagram: [UInt8], to address: SocketAddress) {
        guard context != nil else { return }
        if Self.gso, var batch, batch.address == address, !batch.closed, datagram.count <= batch.segmentSize,
           batch.count < Self.maximumBatch {
            // Out of `self` first: a second reference would make the append copy the
            // whole batch (it did: a quarter of the sender's time).
            self.batch = nil
            batch.buffer.writeBytes(datagram)
            batch.count += 1
            batch.closed = datagram.count < batch.segmentSize   // a shorter one can only be last
            self.batch = batch
            return
        }
        writeBatch()
        // The last batch's buffer again, once the socket has sent it: memory still in
        // the cache, where a fresh 46 KB buffer per batch made copying into it the
        // sender's largest cost.
        var buffer = spareBuffer ?? ByteBuffer()
        spareBuffer = nil
        buffer.clear()
        buffer.reserveCapacity(Self.gso ? datagram.count * Self.maximumBatch : datagram.count)   // never regrown
        buffer.writeBytes(datagram)
        batch = (address, buffer, datagram.count, 1, false)
    }

    private var spareBuffer: ByteBuffer?

    private func writeBatch() {
        guard let batch, let context else { return }
        self.batch = nil
        let metadata = batch.count > 1
            ? AddressedEnvelope<ByteBuffer>.Metadata(ecnState: .transportNotCapable, packetInfo: nil, segmentSize: batch.segmentSize)
            : nil
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: batch.address, data: batch.buffer, metadata: metadata)), promise: nil)
        spareBuffer = batch.buffer
    }

    func flush() {
        writeBatch()
        context?.flush()
    }

    /// A connection is over (both ends done, reset or timed out).
    func remove(_ channel: PTCPChannel) {
        let id = channel.connectionID
        guard connections[id] === channel else { return }
        connections[id] = nil
        unvalidated.remove(id)
        // An accepted connection was keyed by its peer's address and id (the SYN's).
        let key = SYNKey(address: channel.remote, sourceID: channel.peerConnectionID)
        if bySYN[key] == id { bySYN[key] = nil }
    }
}

extension PTCPConfiguration {
    /// The configuration for a path to `address`: over IPv4, path MTU probing tries 20
    /// bytes more (IPv4's header is 20 bytes, IPv6's 40), so a 1,500-byte MTU is filled.
    func forPath(to address: SocketAddress) -> PTCPConfiguration {
        guard case .v4 = address, let probed = probedDatagramSize else { return self }
        var configuration = self
        configuration.probedDatagramSize = probed + 20
        return configuration
    }
}

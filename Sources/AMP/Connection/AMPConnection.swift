import Locking
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// One AMP connection: make calls to the peer and answer its calls, concurrently,
/// in both directions.
///
/// ```swift
/// let connection = try await AMPConnection.connect(host: "127.0.0.1", port: 8788)
/// let reply = try await connection.call(Sum.self, .init(values: [1, 2, 3]))
/// ```
///
/// Calls may be made from any task. If the connection is lost, every call waiting for
/// an answer fails with ``AMPConnectionError/connectionClosed(reason:)``.
public final class AMPConnection: Sendable {
    public let channel: any Channel
    let handler: NIOLoopBound<AMPChannelHandler>
    private let nextTag = Atomic<Int>(1)
    private let state = Locked<(tls: Bool, switched: Bool)>((false, false))

    /// Runs tasks on this connection's event loop; see ``EventLoopTaskExecutor``.
    public let taskExecutor: EventLoopTaskExecutor

    init(channel: any Channel, handler: AMPChannelHandler) {
        self.channel = channel
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        self.taskExecutor = EventLoopTaskExecutor(eventLoop: channel.eventLoop)
    }

    /// Runs `body` on the event loop with the handler: at once when already there.
    private func onLoop(_ body: @escaping @Sendable (AMPChannelHandler) -> Void) {
        if channel.eventLoop.inEventLoop {
            body(handler.value)
        } else {
            let handler = self.handler
            channel.eventLoop.execute { body(handler.value) }
        }
    }

    public var remoteAddress: SocketAddress? { channel.remoteAddress }
    public var localAddress: SocketAddress? { channel.localAddress }
    /// Whether TLS was started on this connection.
    public var isTLS: Bool { state.withLock { $0.tls } }

    func markTLSStarted() { state.withLock { $0.tls = true } }
    func markSwitched() { state.withLock { $0.switched = true } }

    /// `_ask` tags are lowercase hex of a per-connection counter from 1, as Twisted's.
    private func makeTag() -> Int {
        nextTag.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// A request's wire bytes; `tag` is its `_ask`, if it asks for an answer.
    private func request<Command: AMPCommand>(_ command: Command.Type, _ arguments: Command.Arguments, tag: Int?) throws -> ByteBuffer {
        try AMPBoxEncoder().encode(arguments).serializedRequest(command: Command.name, tag: tag, allocator: channel.allocator)
    }

    /// Sends a request with a new tag and waits for the peer's reply.
    /// Cancelling the calling task fails the call with `CancellationError` at once; the
    /// answer, if it ever comes, is dropped. (A call that never gave up would hold its
    /// caller for as long as a silent peer keeps the connection open.)
    private func send(_ command: String, _ arguments: AMPBox) async throws -> AMPReply {
        try Task.checkCancellation()
        let tag = makeTag()
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { continuation in
                onLoop { $0.sendRequest(command: command, arguments: arguments, tag: tag, promise: .continuation(continuation)) }
            }
        } onCancel: {
            onLoop { $0.abandon(tag: tag) }
        }
    }

    /// Calls `command` on the peer and waits for its answer.
    ///
    /// Throws the command's declared error when the peer answers with one, an
    /// ``AMPRemoteError`` for any other error answer (`UNHANDLED`, `UNKNOWN`, …), and
    /// ``AMPConnectionError`` when the connection fails first.
    public func call<Command: AMPCommand>(_ command: Command.Type, _ arguments: Command.Arguments) async throws -> Command.Response {
        let reply = try await send(Command.name, try AMPBoxEncoder().encode(arguments))
        return try Self.decode(command, reply)
    }

    /// Sends `command` without asking for an answer (`requiresAnswer == false`: no `_ask`).
    /// Waits while the connection cannot take more writes, so a fast sender cannot
    /// outrun a slow peer.
    public func send<Command: AMPCommand>(_ command: Command.Type, _ arguments: Command.Arguments) async throws {
        let bytes = try request(command, arguments, tag: nil)
        let writable = channel.eventLoop.makePromise(of: Void.self)
        onLoop {
            $0.sendRequest(bytes, tag: nil, promise: nil)
            $0.whenWritable(writable)
        }
        try await writable.futureResult.get()
    }

    /// Queues a command that needs no answer and returns at once, without waiting for
    /// the socket: for protocols multiplexed on AMP that do their own flow control
    /// (watching ``isWritable`` and ``whenWritable()``). Commands queued from one event
    /// loop or task go out in the order they were queued.
    public func sendWithoutWaiting<Command: AMPCommand>(_ command: Command.Type, _ arguments: Command.Arguments) throws {
        let bytes = try request(command, arguments, tag: nil)
        onLoop { $0.sendRequest(bytes, tag: nil, promise: nil) }
    }

    /// Stops reading from the peer until `until` completes: for a relay whose other side
    /// cannot take more, so that nothing accumulates in between.
    public func pauseReading(until: EventLoopFuture<Void>) {
        onLoop { $0.pauseReads(until: until) }
    }

    /// Whether the socket takes more bytes now (NIO's write watermarks).
    public var isWritable: Bool { channel.isWritable }

    /// Completes when the socket takes more bytes (at once if it does now), or fails
    /// when the connection closes.
    public func whenWritable() -> EventLoopFuture<Void> {
        let writable = channel.eventLoop.makePromise(of: Void.self)
        onLoop { $0.whenWritable(writable) }
        return writable.futureResult
    }

    /// Sends a StartTLS-style command and, once the peer answers, switches this
    /// connection to TLS with `configuration` (as the TLS client when this side made
    /// the TCP connection, else as the server). Returns when the handshake has
    /// completed. Calls made meanwhile are held and sent over TLS.
    public func startTLS<Command: AMPCommand>(
        _ command: Command.Type,
        _ arguments: Command.Arguments,
        configuration: TLSConfiguration,
        serverHostname: String? = nil
    ) async throws -> Command.Response {
        try await startTLS(command, arguments, upgrade: AMPTLSUpgrade(configuration: configuration, serverHostname: serverHostname))
    }

    /// As ``startTLS(_:_:configuration:serverHostname:)``, with every TLS setting,
    /// including a custom verification of the peer's certificates.
    public func startTLS<Command: AMPCommand>(
        _ command: Command.Type,
        _ arguments: Command.Arguments,
        upgrade: AMPTLSUpgrade
    ) async throws -> Command.Response {
        let tag = makeTag()
        let bytes = try request(command, arguments, tag: tag)
        let reply = channel.eventLoop.makePromise(of: AMPReply.self)
        let handshake = channel.eventLoop.makePromise(of: Void.self)
        onLoop { $0.startTLS(request: bytes, tag: tag, reply: reply, upgrade: upgrade, handshake: handshake) }
        let response = try Self.decode(command, try await reply.futureResult.get())
        try await handshake.futureResult.get()
        return response
    }

    /// Sends a protocol-switching command (Twisted's `ProtocolSwitchCommand`). When the
    /// peer answers, `install` adds the new protocol's handlers and AMP leaves the
    /// channel; bytes that followed the answer go to the new protocol. On an error
    /// answer the connection stays AMP and the error is thrown.
    public func switchProtocol<Command: AMPCommand>(
        _ command: Command.Type,
        _ arguments: Command.Arguments,
        install: @escaping AMPProtocolSwitch
    ) async throws -> Command.Response {
        let tag = makeTag()
        let bytes = try request(command, arguments, tag: tag)
        let reply = channel.eventLoop.makePromise(of: AMPReply.self)
        onLoop { $0.switchProtocol(request: bytes, tag: tag, reply: reply, install: install) }
        return try Self.decode(command, try await reply.futureResult.get())
    }

    /// Sends a protocol-switching command and switches at once, without waiting for the
    /// answer, so that the new protocol's first bytes follow the command in the same
    /// round trip. Returns once `install` has run; the returned future completes with
    /// the answer. The answer is read ahead of the new protocol: an answer lets the bytes
    /// behind it through; an error answer closes the channel, and the new protocol's
    /// handlers see ``AMPRemoteError`` in `errorCaught`.
    ///
    /// The peer must hand bytes that follow the command to its new protocol, as ours and
    /// Twisted's do. A refused switch loses what was sent after it.
    @discardableResult
    public func switchProtocolPipelined<Command: AMPCommand>(
        _ command: Command.Type,
        _ arguments: Command.Arguments,
        install: @escaping AMPProtocolSwitch
    ) async throws -> EventLoopFuture<Command.Response> {
        let tag = makeTag()
        let bytes = try request(command, arguments, tag: tag)
        let reply = channel.eventLoop.makePromise(of: AMPReply.self)
        let switched = channel.eventLoop.makePromise(of: Void.self)
        onLoop { $0.switchProtocolPipelined(request: bytes, tag: tag, reply: reply, switched: switched, install: install) }
        try await switched.futureResult.get()
        return reply.futureResult.flatMapThrowing { try Self.decode(command, $0) }
    }

    /// Calls a command by name with arguments already encoded, and returns the answer box
    /// (without `_answer`). For tools that do not know the command's types.
    /// An error answer throws ``AMPRemoteError``.
    public func call(_ commandName: String, arguments: AMPBox) async throws -> AMPBox {
        switch try await send(commandName, arguments) {
        case .answer(var answer):
            answer["_answer"] = nil
            return answer
        case .error(let code, let description):
            throw AMPRemoteError(code: code, description: description)
        }
    }

    private static func decode<Command: AMPCommand>(_ command: Command.Type, _ reply: AMPReply) throws -> Command.Response {
        switch reply {
        case .answer(let box):
            do {
                return try AMPBoxDecoder().decode(Command.Response.self, from: box)
            } catch {
                throw AMPConnectionError.badResponse("\(Command.name): \(error)")
            }
        case .error(let code, let description):
            if let declared = Command.Failure(code: code, description: description) {
                throw declared
            }
            throw AMPRemoteError(code: code, description: description)
        }
    }

    /// The certificate the peer presented in TLS, if TLS is on and it presented one.
    public func peerCertificate() async throws -> NIOSSLCertificate? {
        try await channel.nioSSL_peerCertificate().get()
    }

    /// Closes the connection; waiting calls fail.
    public func close() async {
        try? await channel.close()
    }

    /// Returns when the connection has closed, or when the calling task is cancelled.
    public func waitUntilClosed() async {
        let (closed, continuation) = AsyncStream.makeStream(of: Never.self)
        channel.closeFuture.whenComplete { _ in continuation.finish() }
        for await _ in closed {}
    }
}

// MARK: - Making connections

extension AMPConnection {
    /// Adds AMP to a channel and returns the connection. Must run on the channel's
    /// event loop (as in a bootstrap's channel initializer).
    /// `isTCPServer` decides the TLS role should StartTLS be used.
    public static func install(
        on channel: any Channel,
        responders: AMPResponders,
        isTCPServer: Bool,
        limits: AMPLimits = .default,
        logger: Logger = Logger(label: "vertex.amp")
    ) throws -> AMPConnection {
        let handler = AMPChannelHandler(responders: responders, limits: limits, isTCPServer: isTCPServer, logger: logger)
        let connection = AMPConnection(channel: channel, handler: handler)
        handler.bind(connection)
        try channel.pipeline.syncOperations.addHandler(handler)
        return connection
    }

    /// Connects to an AMP peer over TCP.
    public static func connect(
        host: String,
        port: Int,
        responders: AMPResponders = AMPResponders(),
        limits: AMPLimits = .default,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "vertex.amp")
    ) async throws -> AMPConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port).get()
        return try await channel.eventLoop.submit {
            try AMPConnection.install(on: channel, responders: responders, isTCPServer: false, limits: limits, logger: logger)
        }.get()
    }
}

/// A TCP listener whose every connection speaks AMP with the same responders.
public final class AMPServer: Sendable {
    public let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// The address actually bound (useful with port 0).
    public var localAddress: SocketAddress? { channel.localAddress }
    public var port: Int? { channel.localAddress?.port }

    /// Listens on `host:port`. `onConnection` is told of each new connection on its event loop.
    public static func bind(
        host: String,
        port: Int,
        responders: AMPResponders,
        limits: AMPLimits = .default,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "vertex.amp"),
        onConnection: (@Sendable (AMPConnection) -> Void)? = nil
    ) async throws -> AMPServer {
        try await bind(host: host, port: port, limits: limits, group: group, logger: logger,
                       respondersForConnection: { responders }, onConnection: onConnection)
    }

    /// Listens on `host:port`, with responders made for each connection (so that they
    /// can keep that connection's state, such as who the peer proved to be).
    public static func bind(
        host: String,
        port: Int,
        limits: AMPLimits = .default,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "vertex.amp"),
        respondersForConnection: @escaping @Sendable () -> AMPResponders,
        onConnection: (@Sendable (AMPConnection) -> Void)? = nil
    ) async throws -> AMPServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .ipv6Only(binding: host)
            // Out of descriptors, accepting fails at once and would be retried at once,
            // for ever: accepts pause a second instead, and the reason is logged.
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptFailurePause(logger: logger))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = try AMPConnection.install(
                        on: channel, responders: respondersForConnection(), isTCPServer: true, limits: limits, logger: logger)
                    onConnection?(connection)
                }
            }
            .bind(host: host, port: port).get()
        return AMPServer(channel: channel)
    }

    /// Stops listening; connections already made stay open.
    public func close() async {
        try? await channel.close()
    }
}

/// When accepting fails (out of descriptors, usually), stops accepting for a second and
/// logs why, at most every 10 seconds with how many failures since the last line. (The
/// listening socket stays readable while connections wait in its backlog: without the
/// pause the event loop would retry at once, for ever, at full CPU.)
final class AcceptFailurePause: ChannelInboundHandler {
    typealias InboundIn = any Channel
    static let pause = TimeAmount.seconds(1)
    private let logger: Logger
    private var failures = 0
    private var lastLogged: NIODeadline?
    private var paused = false

    init(logger: Logger) { self.logger = logger }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failures += 1
        let now = NIODeadline.now()
        if lastLogged.map({ now - $0 >= .seconds(10) }) ?? true {
            logger.warning("cannot accept connections; pausing accepts for a second", metadata: [
                "error": "\(error)", "failures": "\(failures)",
                "hint": "too many open files: raise the descriptor limit (ulimit -n), or wait for connections to close",
            ])
            lastLogged = now
            failures = 0
        }
        if !paused, let options = context.channel.syncOptions {
            paused = true
            try? options.setOption(.autoRead, value: false)
            let channel = context.channel
            context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) { [self] in
                paused = false
                try? channel.syncOptions?.setOption(.autoRead, value: true)
            }
        }
    }
}

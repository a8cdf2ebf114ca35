import AMP
import NIOCore

/// The virtual channels of one AMP connection, on a node: it numbers ours, delivers
/// the peer's `write`/`close`/`credit`/`Choke`/`Unchoke` to the right channel, and sends ours.
/// Confined to the connection's event loop.
final class VirtualChannelMultiplexer: @unchecked Sendable {
    let connection: AMPConnection
    /// The side that made the TCP connection numbers 1, 2, 3…; the other -1, -2, -3….
    let ourSign: Int
    private var channels: [Int: VirtualChannel] = [:]
    private var nextNumber = 1
    private var waitingForWritable = false

    init(connection: AMPConnection, madeTheConnection: Bool) {
        self.connection = connection
        self.ourSign = madeTheConnection ? 1 : -1
    }

    var eventLoop: any EventLoop { connection.channel.eventLoop }

    /// A new channel with one of our ids, not yet active, granting the peer `receiveWindow`.
    func makeChannel(receiveWindow: Int) -> VirtualChannel {
        eventLoop.preconditionInEventLoop()
        let id = ourSign * nextNumber
        nextNumber += 1
        let channel = VirtualChannel(id: id, multiplexer: self, parent: connection.channel, receiveWindow: receiveWindow)
        channels[id] = channel
        return channel
    }

    /// A channel the peer opened with `id`; `nil` when the id has the wrong sign or is taken.
    func acceptChannel(id: Int, receiveWindow: Int) -> VirtualChannel? {
        eventLoop.preconditionInEventLoop()
        guard id != 0, id.signum() == -ourSign, channels[id] == nil else { return nil }
        let channel = VirtualChannel(id: id, multiplexer: self, parent: connection.channel, receiveWindow: receiveWindow)
        channels[id] = channel
        return channel
    }

    // MARK: From the peer (responders, on the event loop)

    func receivedWrite(_ id: Int, _ body: ByteBuffer) {
        channels[id]?.received(body)
    }

    func receivedClose(_ id: Int) {
        channels[id]?.remoteClosed()
    }

    func receivedCredit(_ id: Int, bytes: Int) {
        channels[id]?.peerGranted(bytes)
    }

    func receivedChoke(_ id: Int, choked: Bool) {
        channels[id]?.peerChoked(choked)
    }

    /// The connection is gone: every channel on it is closed.
    func connectionClosed() {
        for channel in Array(channels.values) { channel.remoteClosed() }
    }

    // MARK: From our channels

    var parentIsWritable: Bool { connection.isWritable }

    func sendWrite(_ id: Int, _ body: ByteBuffer) {
        try? connection.sendWithoutWaiting(Write.self, .init(id: id, body: AMPBytes(body)))
    }

    func sendCredit(_ id: Int, _ bytes: Int) {
        try? connection.sendWithoutWaiting(Credit.self, .init(id: id, bytes: bytes))
    }

    func sendClose(_ id: Int) {
        let connection = self.connection
        Task { _ = try? await connection.call(Close.self, .init(id: id)) }
    }

    /// A wait for the connection to take more is registered.
    var isWaitingForWritable: Bool { waitingForWritable }

    func notifyWhenParentWritable() {
        guard !waitingForWritable else { return }
        waitingForWritable = true
        connection.whenWritable().whenComplete { [self] _ in
            waitingForWritable = false
            for channel in Array(channels.values) { channel.parentWritabilityChanged() }
        }
    }

    func remove(_ id: Int) {
        channels[id] = nil
    }

    var count: Int { channels.count }

    /// Every channel's flow-control state (``VirtualChannel/flowDescription``).
    func flowDescriptions() -> EventLoopFuture<[String]> {
        eventLoop.submit { [self] in channels.sorted { $0.key < $1.key }.map(\.value.flowDescription) }
    }
}

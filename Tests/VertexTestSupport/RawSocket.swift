import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

public typealias RawChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>

/// Plain TCP sockets on loopback that write exact bytes and read what comes back, to see
/// what a server does with input a well-behaved peer would never send.
public enum RawSocket {
    public static func connect(port: Int) async throws -> RawChannel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try RawChannel(wrappingChannelSynchronously: channel) }
        }
    }

    /// Reads what arrives within `window`, and whether the peer closed.
    public static func readAll(_ channel: RawChannel, window: Duration) async throws -> (bytes: [UInt8], closed: Bool) {
        let timedOut = NIOLockedValueBox(false)
        // Decided on the event loop: whether the peer had closed when the window ends.
        // (Deciding where the bytes are read would count a busy test machine's late
        // task as a peer that never closed.)
        let timer = channel.channel.eventLoop.scheduleTask(in: TimeAmount(window)) {
            guard channel.channel.isActive else { return }
            timedOut.withLockedValue { $0 = true }
            channel.channel.close(promise: nil)
        }
        var collected: [UInt8] = []
        try? await channel.executeThenClose { inbound, _ in
            // A reset counts as closed, like an orderly close.
            for try await chunk in inbound {
                collected += chunk.readableBytesView
            }
        }
        timer.cancel()
        return (collected, !timedOut.withLockedValue { $0 })
    }

    /// Connects to `port`, sends `bytes` (in one write, or one byte per write) and
    /// returns what came back within `window`, and whether the server closed.
    public static func exchange(port: Int, bytes: [UInt8], byteByByte: Bool = false, window: Duration) async throws -> (bytes: [UInt8], closed: Bool) {
        let channel = try await connect(port: port)
        if byteByByte {
            for byte in bytes {
                try await channel.channel.writeAndFlush(ByteBuffer(bytes: [byte]))
            }
        } else {
            try await channel.channel.writeAndFlush(ByteBuffer(bytes: bytes))
        }
        return try await readAll(channel, window: window)
    }
}

import Foundation
import Locking
import NIOCore
import Synchronization

/// Reads control messages and raw data from a stream's inbound side.
struct StreamReader {
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var buffered = ByteBuffer()
    private let watchdog: IdleWatchdog?

    init(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, watchdog: IdleWatchdog? = nil) {
        iterator = inbound.makeAsyncIterator()
        self.watchdog = watchdog
    }

    /// Whether more bytes came; `false` at the end of the stream.
    private mutating func fill() async throws -> Bool {
        let next: ByteBuffer?
        do {
            next = try await iterator.next()
        } catch {
            throw FileTransferError("the stream failed: \(error)", fromPeer: true)
        }
        guard var more = next else { return false }
        watchdog?.heard()
        if buffered.readableBytes == 0 {
            // Nothing of the old buffer is left to read: take the new one as it came.
            // (Appending to the old one kept every byte ever read: a receiver held a
            // whole 1 GiB file in memory, and copied it, until the stream ended.)
            buffered = more
        } else {
            // Part of a control message: keep only what is unread, then append.
            buffered.discardReadBytes()
            buffered.writeBuffer(&more)
        }
        return true
    }

    /// Reads until the peer ends its side of the stream, or until `limit` has passed,
    /// when it closes `channel`. Each side calls this after its last message: the
    /// peer's end is its TLS close_notify, and once that has been read, closing our side
    /// is immediate. Left unread (nothing asks the channel to read once the exchange is
    /// over), NIOSSL's close waited its whole 5 s shutdown timeout for it: one
    /// `vertex send` in four, after the receiver's verdict had arrived.
    mutating func awaitPeerEnd(of channel: any Channel, within limit: TimeAmount = .seconds(2)) async {
        let giveUp = channel.eventLoop.scheduleTask(in: limit) { channel.close(promise: nil) }
        defer { giveUp.cancel() }
        buffered.clear()
        while let more = try? await iterator.next() {
            _ = more  // anything past the last message is not ours to read
        }
    }

    /// Bytes of memory the reader holds (for tests: it must not grow with the stream).
    var heldCapacity: Int { buffered.capacity }

    mutating func message<Message: Decodable>(_ type: Message.Type) async throws -> Message {
        while buffered.readableBytes < 4 {
            guard try await fill() else { throw FileTransferError("the peer closed the stream", fromPeer: true) }
        }
        let length = Int(buffered.getInteger(at: buffered.readerIndex, as: UInt32.self)!)
        guard length <= FileTransferMessage.maximumMessageSize else {
            throw FileTransferError("a control message of \(length) bytes is over the \(FileTransferMessage.maximumMessageSize)-byte limit")
        }
        while buffered.readableBytes < 4 + length {
            guard try await fill() else { throw FileTransferError("the peer closed the stream", fromPeer: true) }
        }
        buffered.moveReaderIndex(forwardBy: 4)
        let bytes = buffered.readSlice(length: length)!
        return try FileTransferMessage.decode(Message.self, from: bytes.readableBytesView)
    }

    /// Up to `limit` bytes of data; throws at the end of the stream.
    mutating func data(upTo limit: Int) async throws -> ByteBuffer {
        if buffered.readableBytes == 0 {
            guard try await fill() else { throw FileTransferError("the stream ended before the file did", fromPeer: true) }
        }
        return buffered.readSlice(length: min(limit, buffered.readableBytes))!
    }
}

extension NIOAsyncChannelOutboundWriter<ByteBuffer> {
    func send<Message: Encodable>(_ message: Message) async throws {
        try await write(try FileTransferMessage.frame(message))
    }
}

extension FileTransferMessage {
    /// A control message as it travels: a 4-byte big-endian length, then its JSON.
    package static func frame<Message: Encodable>(_ message: Message) throws -> ByteBuffer {
        let json = try JSONEncoder().encode(message)
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(json.count))
        buffer.writeBytes(json)
        return buffer
    }

    /// A control message from the bytes its length prefix names.
    package static func decode<Message: Decodable>(_ type: Message.Type, from body: some Collection<UInt8>) throws(FileTransferError) -> Message {
        do {
            return try JSONDecoder().decode(Message.self, from: Data(body))
        } catch {
            throw FileTransferError("a malformed \(Message.self) message: \(error)")
        }
    }
}

/// Closes a stream that stays silent for `timeout` while it is expected to talk: the
/// reader calls ``heard()`` for each read; a timer checks now and then.
final class IdleWatchdog: Sendable {
    private let lastHeard: Atomic<Int64>
    private let paused = Atomic<Bool>(false)
    private let timer: Locked<RepeatedTask?> = Locked(nil)

    init(channel: any Channel, timeout: Duration) {
        lastHeard = Atomic(Self.now())
        let limit = TimeAmount(timeout).nanoseconds
        let period = TimeAmount.nanoseconds(max(10_000_000, limit / 4))
        let task = channel.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] task in
            guard !paused.load(ordering: .relaxed), Self.now() - lastHeard.load(ordering: .relaxed) > limit else { return }
            task.cancel()
            channel.close(promise: nil)
        }
        timer.withLock { $0 = task }
    }

    private static func now() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    func heard() { lastHeard.store(Self.now(), ordering: .relaxed) }

    /// Silence is expected (the user is deciding) until ``resume()``.
    func pause() { paused.store(true, ordering: .relaxed) }

    func resume() {
        heard()
        paused.store(false, ordering: .relaxed)
    }

    func stop() { timer.withLock { $0?.cancel() } }
}

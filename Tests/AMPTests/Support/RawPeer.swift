import AMP
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization
import VertexTestSupport

/// Raw peers of our AMP side: a listener that accepts plain sockets, and the exchanges
/// with our client that the tests check byte by byte (``RawSocket`` writes to our server).
enum RawPeer {
    static let group = MultiThreadedEventLoopGroup.singleton

    /// Listens on loopback; `body` gets the port and an iterator of accepted sockets.
    static func withListener<T: Sendable>(
        _ body: (Int, inout NIOAsyncChannelInboundStream<RawChannel>.AsyncIterator) async throws -> T
    ) async throws -> T {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture { try RawChannel(wrappingChannelSynchronously: channel) }
            }
        let port = server.channel.localAddress!.port!
        defer { server.channel.close(promise: nil) }
        return try await server.executeThenClose { inbound in
            var iterator = inbound.makeAsyncIterator()
            return try await body(port, &iterator)
        }
    }

    /// Makes `count` sequential calls from our client and returns the `_ask` tags the
    /// raw server saw.
    static func recordAskTags(count: Int) async throws -> [String] {
        try await withListener { port, accepted in
            let connection = try await AMPConnection.connect(host: "127.0.0.1", port: port)
            let serverSide = try await accepted.next()!
            let client = Task {
                for _ in 0..<count { _ = try await connection.call(Empty.self, AMPEmpty()) }
            }
            var tags: [String] = []
            try await serverSide.executeThenClose { inbound, outbound in
                var parser = AMPBoxParser()
                var buffer = ByteBuffer()
                for try await var chunk in inbound {
                    buffer.writeBuffer(&chunk)
                    while let box = try parser.nextBox(from: &buffer) {
                        let tag = box.string("_ask")!
                        tags.append(tag)
                        try await outbound.write(AMPBox(["_answer": tag]).serialized())
                    }
                    if tags.count == count { break }
                }
            }
            try await client.value
            await connection.close()
            return tags
        }
    }

    struct PipelineResult: Sendable {
        var requestStream: [UInt8]
        var completionOrder: [String]
    }

    /// Three `Optional` calls in flight; the raw server answers them with `answers`,
    /// one byte per write.
    static func pipelinedOptionalCalls(answers: Data) async throws -> PipelineResult {
        try await withListener { port, accepted in
            let connection = try await AMPConnection.connect(host: "127.0.0.1", port: port)
            let serverSide = try await accepted.next()!
            let completed = NIOLockedValueBox<[String]>([])
            return try await serverSide.executeThenClose { inbound, outbound in
                var received: [UInt8] = []
                var parser = AMPBoxParser()
                var buffer = ByteBuffer()
                var iterator = inbound.makeAsyncIterator()
                var calls: [Task<Void, any Error>] = []
                for k in 0..<3 {
                    // One call at a time onto the wire, so the stream's order is fixed.
                    calls.append(Task {
                        let reply = try await connection.call(OptionalCommand.self, .init(required: k, maybe: String(k)))
                        completed.withLockedValue { $0.append(reply.echo ?? "") }
                    })
                    var boxes = 0
                    while boxes == 0, var chunk = try await iterator.next() {
                        received += chunk.readableBytesView
                        buffer.writeBuffer(&chunk)
                        while try parser.nextBox(from: &buffer) != nil { boxes += 1 }
                    }
                }
                // One byte per write. After each whole answer, wait until its call has
                // completed: two answers landing in one read would otherwise resume two
                // tasks at once, and the order they append in would be the scheduler's.
                var answerParser = AMPBoxParser()
                var answerBytes = ByteBuffer()
                var answered = 0
                for byte in answers {
                    try await outbound.write(ByteBuffer(bytes: [byte]))
                    answerBytes.writeInteger(byte)
                    while try answerParser.nextBox(from: &answerBytes) != nil {
                        answered += 1
                        let deadline = ContinuousClock.now + .seconds(5)
                        while completed.withLockedValue({ $0.count }) < answered, ContinuousClock.now < deadline {
                            try await Task.sleep(for: .milliseconds(1))
                        }
                    }
                }
                for call in calls { try await call.value }
                await connection.close()
                return PipelineResult(requestStream: received, completionOrder: completed.withLockedValue { $0 })
            }
        }
    }
}

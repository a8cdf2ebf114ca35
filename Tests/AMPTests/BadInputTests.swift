import AMP
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing
import VertexTestSupport

/// The golden `bad_input` vectors, sent over real loopback TCP to our server: it must
/// answer and close exactly when Twisted's server did.
@Suite("Bad input from the peer")
struct BadInputTests {
    @Test("bad input vector", arguments: SharedFiles.vectorNames("bad_input"))
    func badInput(name: String) async throws {
        let vector = SharedFiles.vector("bad_input", named: name)
        let server = try await AMPServer.bind(host: "127.0.0.1", port: 0, responders: makeTestResponders())
        defer { Task { await server.close() } }
        let input = [UInt8](Data(hex: vector["input_hex"].string!))
        let tcp = vector["tcp"]
        let twistedClosed = tcp["server_closed"].bool!
        // Where a close is expected it ends the wait, so that wait can be long (other
        // suites load the machine); where none is, we wait out the window.
        let result = try await RawSocket.exchange(port: server.port!, bytes: input, byteByByte: name.hasSuffix("byte-by-byte"),
                                               window: .seconds(twistedClosed ? 30 : 2))
        let twistedResponse = tcp["response_hex"].string!
        #expect(result.closed == twistedClosed, "closed")
        if twistedClosed && twistedResponse.isEmpty {
            // Twisted drops answers already queued in the same read when it then closes;
            // we may send them first. Anything we sent must be plain answers.
            let boxes = try AMPBoxParser.boxes(in: ByteBuffer(bytes: result.bytes))
            #expect(boxes.allSatisfy { $0["_answer"] != nil })
        } else {
            #expect(result.bytes.hex == twistedResponse)
        }
    }

    @Test("many bad clients at once leave the server serving good ones")
    func manyBadClients() async throws {
        let server = try await AMPServer.bind(host: "127.0.0.1", port: 0, responders: makeTestResponders())
        defer { Task { await server.close() } }
        let port = server.port!
        let inputs = SharedFiles.vectorList("bad_input").map { [UInt8](Data(hex: $0["input_hex"].string!)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for round in 0..<4 {
                for input in inputs {
                    group.addTask {
                        _ = try await RawSocket.exchange(port: port, bytes: input, byteByByte: false, window: .milliseconds(300))
                    }
                }
                // Half-open connections that never finish a box.
                group.addTask {
                    let channel = try await RawSocket.connect(port: port)
                    try await channel.channel.writeAndFlush(ByteBuffer(bytes: [0x00, 0x05, 0x61]))
                    _ = round
                    try await Task.sleep(for: .milliseconds(300))
                    try await channel.channel.close()
                }
            }
            try await group.waitForAll()
        }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: port)
        let reply = try await client.call(Sum.self, .init(values: [1, 2, 3]))
        #expect(reply.total == 6)
        await client.close()
    }

    @Test("an oversized box closes the connection")
    func oversizedBox() async throws {
        var limits = AMPLimits()
        limits.maximumBoxSize = 100_000
        // What the server side did, and when: said if the client does not see the close.
        let start = ContinuousClock.now
        let serverEvents = NIOLockedValueBox<[String]>([])
        let server = try await AMPServer.bind(host: "127.0.0.1", port: 0, responders: makeTestResponders(), limits: limits) { connection in
            serverEvents.withLockedValue { $0.append("accepted at \(ContinuousClock.now - start)") }
            connection.channel.closeFuture.whenComplete { _ in
                serverEvents.withLockedValue { $0.append("closed at \(ContinuousClock.now - start)") }
            }
        }
        defer { Task { await server.close() } }
        // Two 65535-byte values in one box: each legal, together over the limit.
        var bytes: [UInt8] = []
        for key in ["a", "b"] {
            bytes += [0, 1] + Array(key.utf8) + [0xFF, 0xFF] + [UInt8](repeating: 0x78, count: 65535)
        }
        let result = try await RawSocket.exchange(port: server.port!, bytes: bytes, byteByByte: false, window: .seconds(60))
        #expect(result.closed, "server side: \(serverEvents.withLockedValue { $0 }); gave up at \(ContinuousClock.now - start)")
        #expect(result.bytes.isEmpty)
    }
}

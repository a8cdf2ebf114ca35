import AMP
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import Testing
import VertexTestSupport

/// Our AMP against itself on loopback: both directions, StartTLS with mutual
/// verification, protocol switching, connection loss and backpressure.
@Suite("AMP connections")
struct ConnectionTests {
    static func server(_ responders: AMPResponders = makeTestResponders(), limits: AMPLimits = .default) async throws -> AMPServer {
        try await AMPServer.bind(host: "127.0.0.1", port: 0, responders: responders, limits: limits)
    }

    @Test("concurrent calls in both directions on one connection")
    func bothDirections() async throws {
        let server = try await Self.server()
        defer { Task { await server.close() } }
        var responders = AMPResponders()
        responders.register(Ping.self) { arguments, _ in Ping.Response(value: AMPInteger(integer(arguments.value) + 1)) }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!, responders: responders)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for k in 0..<100 {
                group.addTask {
                    // Each CallMeBack makes the server call our Ping before it answers.
                    let reply = try await client.call(CallMeBack.self, .init(value: AMPInteger(k)))
                    #expect(integer(reply.got) == k + 1)
                }
                group.addTask {
                    let total = try await client.call(Sum.self, .init(values: [k, 1])).total
                    #expect(total == k + 1)
                }
            }
            try await group.waitForAll()
        }
        await client.close()
    }

    @Test("a lost connection fails every waiting call, and later calls at once")
    func connectionLoss() async throws {
        var responders = AMPResponders()
        responders.register(Sum.self) { _, _ in
            try await Task.sleep(for: .seconds(30))
            return Sum.Response(total: 0)
        }
        let server = try await Self.server(responders)
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        let calls = (0..<10).map { _ in Task { try await client.call(Sum.self, .init(values: [1])) } }
        try await Task.sleep(for: .milliseconds(200))
        await client.close()
        for call in calls {
            await #expect(throws: AMPConnectionError.self) { try await call.value }
        }
        await #expect(throws: AMPConnectionError.self) { try await client.call(Sum.self, .init(values: [1])) }
    }

    @Test("cancelling a call fails it at once; its late answer is dropped and the connection goes on")
    func cancelledCall() async throws {
        var responders = AMPResponders()
        responders.register(Sum.self) { arguments, _ in
            // The first call is answered late; the others at once.
            if arguments.values.first == 0 { try await Task.sleep(for: .seconds(2)) }
            return Sum.Response(total: arguments.values.reduce(0, +))
        }
        let server = try await Self.server(responders)
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        let slow = Task { try await client.call(Sum.self, .init(values: [0, 1])) }
        try await Task.sleep(for: .milliseconds(100))
        slow.cancel()
        // (Without cancellation the call would return its answer, 2 s later.)
        await #expect(throws: CancellationError.self) { try await slow.value }
        // The late answer arrives while the connection carries on.
        try await Task.sleep(for: .seconds(2.5))
        #expect(try await client.call(Sum.self, .init(values: [2, 3])).total == 5)
        await client.close()
    }

    @Test("StartTLS with both sides verified against a CA")
    func mutualStartTLS() async throws {
        let authority = try TestIdentity.authority("test CA")
        let serverIdentity = try authority.issue("server.test")
        let clientIdentity = try authority.issue("client.test")
        let server = try await Self.server(makeTestResponders(tls: serverIdentity.tls(server: true, trusting: [authority.nioCertificate])))
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        #expect(!client.isTLS)
        // A call made while TLS starts is held and sent encrypted.
        async let during = client.call(Sum.self, .init(values: [4, 5]))
        _ = try await client.startTLS(StartTLS.self, AMPEmpty(),
                                      configuration: clientIdentity.tls(server: false, trusting: [authority.nioCertificate]))
        #expect(try await during.total == 9)
        #expect(client.isTLS)
        #expect(try await client.peerCertificate() == serverIdentity.nioCertificate)
        #expect(try await client.call(Sum.self, .init(values: [1, 2])).total == 3)
        await client.close()
    }

    @Test("StartTLS fails when the client's certificate is from another CA")
    func startTLSRejectsStranger() async throws {
        let authority = try TestIdentity.authority("test CA")
        let stranger = try TestIdentity.authority("other CA").issue("client.test")
        let server = try await Self.server(makeTestResponders(tls: try authority.issue("server.test").tls(server: true, trusting: [authority.nioCertificate])))
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        // In TLS 1.3 the client may finish its handshake before the server has checked
        // the client's certificate: the rejection then ends the connection right after.
        await #expect(throws: (any Error).self) {
            _ = try await client.startTLS(StartTLS.self, AMPEmpty(), configuration: stranger.tls(server: false, trusting: [authority.nioCertificate]))
            _ = try await client.call(Sum.self, .init(values: [1]))
        }
        await client.waitUntilClosed()
    }

    @Test("StartTLS refused by a peer that has no TLS leaves the connection in clear")
    func startTLSRefused() async throws {
        let server = try await Self.server()  // no StartTLS responder: UNHANDLED
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        await #expect(throws: AMPRemoteError.self) {
            try await client.startTLS(StartTLS.self, AMPEmpty(), configuration: .makeClientConfiguration())
        }
        #expect(!client.isTLS)
        #expect(try await client.call(Sum.self, .init(values: [1, 1])).total == 2)
        await client.close()
    }

    enum Switch: AMPCommand {
        static let name = "Retrieve-Connection"
        struct Arguments: Codable, Sendable { var identifier: String }
        typealias Failure = SwitchError
    }

    struct SwitchError: AMPDeclaredError, Equatable {
        var code: String { "NoSuchConnection" }
        var errorDescription: String { "no such connection" }
        var isFatal: Bool { false }
        init() {}
        init?(code: String, description: String) { if code != "NoSuchConnection" { return nil } }
    }

    /// After the switch the server echoes raw bytes, upper-cased.
    final class ShoutHandler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: unwrapInboundIn(data)).uppercased()
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
        }
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox("")
        let errors = NIOLockedValueBox<[String]>([])
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: unwrapInboundIn(data))
            received.withLockedValue { $0 += text }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            errors.withLockedValue { $0.append("\(error)") }
        }
    }

    /// A server whose `Retrieve-Connection` accepts "known" and switches to shouting.
    static func shoutingServer() async throws -> AMPServer {
        var responders = makeTestResponders()
        responders.registerProtocolSwitch(Switch.self) { arguments, _ in
            guard arguments.identifier == "known" else { throw SwitchError() }
            return (AMPEmpty(), { channel in try channel.pipeline.syncOperations.addHandler(ShoutHandler()) })
        }
        return try await server(responders)
    }

    @Test("a pipelined protocol switch: bytes right behind the command reach the new protocol; a refused one closes with the peer's error")
    func pipelinedProtocolSwitch() async throws {
        let server = try await Self.shoutingServer()
        defer { Task { await server.close() } }

        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        let collector = Collector()
        let answer = try await client.switchProtocolPipelined(Switch.self, .init(identifier: "known")) { channel in
            try channel.pipeline.syncOperations.addHandler(collector)
            // Sent before the answer can have arrived: these bytes travel right behind the command.
            channel.writeAndFlush(ByteBuffer(string: "right behind"), promise: nil)
        }
        await #expect(throws: AMPConnectionError.protocolSwitched) {
            try await client.call(Sum.self, .init(values: [1]))
        }
        _ = try await answer.get()
        for _ in 0..<100 where collector.received.withLockedValue({ $0 }).count < 12 {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(collector.received.withLockedValue { $0 } == "RIGHT BEHIND")
        #expect(collector.errors.withLockedValue { $0 }.isEmpty)
        await client.close()

        let refused = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        let recorder = Collector()
        let refusal = try await refused.switchProtocolPipelined(Switch.self, .init(identifier: "unknown")) { channel in
            try channel.pipeline.syncOperations.addHandler(recorder)
            channel.writeAndFlush(ByteBuffer(string: "never delivered"), promise: nil)
        }
        await #expect(throws: SwitchError()) { try await refusal.get() }
        try await refused.channel.closeFuture.get()
        #expect(recorder.received.withLockedValue { $0 } == "")
        #expect(recorder.errors.withLockedValue { $0 } == ["remote AMP error NoSuchConnection: no such connection"])
    }

    @Test("protocol switch hands the connection, and bytes already sent, to the new protocol")
    func protocolSwitch() async throws {
        let server = try await Self.shoutingServer()
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)

        // A refused switch leaves AMP working.
        await #expect(throws: SwitchError()) {
            try await client.switchProtocol(Switch.self, .init(identifier: "unknown"), install: { _ in })
        }
        #expect(try await client.call(Sum.self, .init(values: [2, 2])).total == 4)

        let collector = Collector()
        _ = try await client.switchProtocol(Switch.self, .init(identifier: "known")) { channel in
            try channel.pipeline.syncOperations.addHandler(collector)
        }
        await #expect(throws: AMPConnectionError.protocolSwitched) {
            try await client.call(Sum.self, .init(values: [1]))
        }
        try await client.channel.writeAndFlush(ByteBuffer(string: "hello over raw tcp"))
        for _ in 0..<100 where collector.received.withLockedValue({ $0 }).count < 18 {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(collector.received.withLockedValue { $0 } == "HELLO OVER RAW TCP")
        await client.close()
    }

    @Test("a slow reader chokes a fire-and-forget sender instead of buffering without bound")
    func sendBackpressure() async throws {
        try await RawPeer.withListener { port, accepted in
            let client = try await AMPConnection.connect(host: "127.0.0.1", port: port)
            let peer = try await accepted.next()!  // accepts, never reads
            let sent = NIOLockedValueBox(0)
            let text = String(repeating: "x", count: 60_000)
            let sender = Task {
                for _ in 0..<2000 {
                    try await client.send(Note.self, .init(text: text))
                    sent.withLockedValue { $0 += 1 }
                }
            }
            try await Task.sleep(for: .seconds(2))
            // 2000 × 60 kB = 120 MB would have been queued; the socket buffers hold a few MB.
            let count = sent.withLockedValue { $0 }
            #expect(count < 200, "sent \(count) boxes to a peer that reads nothing")
            sender.cancel()
            await client.close()
            // Our close may already have closed it (the peer sees the reset).
            try? await peer.channel.close()
        }
    }

    @Test("a flood beyond the concurrency limit is queued and every request answered")
    func floodAllAnswered() async throws {
        var responders = AMPResponders()
        responders.registerImmediate(Sum.self) { arguments, _ in Sum.Response(total: arguments.values.reduce(0, +)) }
        let server = try await Self.server(responders, limits: AMPLimits(maximumConcurrentIncomingRequests: 2))
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        let totals = try await withThrowingTaskGroup(of: Bool.self) { group in
            for k in 0..<3000 {
                group.addTask { try await client.call(Sum.self, .init(values: [k, 1])).total == k + 1 }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(totals.count == 3000 && totals.allSatisfy { $0 })
        await client.close()
    }

    @Test("a peer flooding requests is read only as fast as they are answered")
    func requestBackpressure() async throws {
        let started = NIOLockedValueBox(0)
        var responders = AMPResponders()
        responders.register(Sum.self) { _, _ in
            started.withLockedValue { $0 += 1 }
            try await Task.sleep(for: .seconds(60))
            return Sum.Response(total: 0)
        }
        let server = try await Self.server(responders, limits: AMPLimits(maximumConcurrentIncomingRequests: 8))
        defer { Task { await server.close() } }
        let client = try await AMPConnection.connect(host: "127.0.0.1", port: server.port!)
        let calls = (0..<500).map { _ in Task { try await client.call(Sum.self, .init(values: [1])) } }
        // Wait for the first responders (a loaded machine may take a while), then give
        // the rest every chance to start if the limit did not hold.
        for _ in 0..<200 where started.withLockedValue({ $0 }) == 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .milliseconds(500))
        let running = started.withLockedValue { $0 }
        #expect(running >= 1 && running <= 8, "\(running) responders running")
        await client.close()
        for call in calls { _ = try? await call.value }
    }

    @Test("half a box read while we hold reads (our own backpressure) is not taken for a stalled peer")
    func heldReadsAreNotAStall() async throws {
        // The first request is held until 2 s after the test has sent the rest of the
        // second box (however late a loaded machine lets the test send it), so the rest
        // waits in the socket, behind our held reads, longer than the half-box timeout.
        let release = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
        var responders = AMPResponders()
        responders.register(Ping.self) { arguments, _ in
            while release.withLockedValue({ $0 }).map({ ContinuousClock.now < $0 }) ?? true {
                try await Task.sleep(for: .milliseconds(20))
            }
            return Ping.Response(value: arguments.value)
        }
        // One request at a time: while the first runs, reads are held.
        let server = try await Self.server(responders, limits: AMPLimits(maximumConcurrentIncomingRequests: 1, partialBoxTimeout: 1))
        defer { Task { await server.close() } }
        // The first box and the start of the second in one write, so that one read
        // leaves half a box in the server's buffer.
        var opening = try AMPBox(["_command": "Ping", "_ask": "1", "value": "1"]).serialized()
        var second = try AMPBox(["_command": "Ping", "_ask": "2", "value": "2"]).serialized()
        opening.writeImmutableBuffer(second.readSlice(length: 10)!)
        let channel = try await RawSocket.connect(port: server.port!)
        try await channel.channel.writeAndFlush(opening)
        try await Task.sleep(for: .milliseconds(300))
        try await channel.channel.writeAndFlush(second)
        release.withLockedValue { $0 = ContinuousClock.now + .seconds(2) }
        let (bytes, _) = try await RawSocket.readAll(channel, window: TestTime.scaled(.seconds(6)))
        let answers = String(decoding: bytes, as: UTF8.self).components(separatedBy: "_answer").count - 1
        #expect(answers == 2, "\(answers) of 2 calls answered")
    }

    @Test("a deadline check that runs late because its event loop stalled reads what waits before it closes")
    func stalledLoopIsNotAStalledPeer() async throws {
        // The server on a loop of its own, which the test stalls; the client elsewhere.
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let serverLoop = NIOLockedValueBox<(any EventLoop)?>(nil)
        let server = try await AMPServer.bind(host: "127.0.0.1", port: 0, responders: makeTestResponders(),
                                              limits: AMPLimits(partialBoxTimeout: 1), group: serverGroup) { connection in
            serverLoop.withLockedValue { $0 = connection.channel.eventLoop }
        }
        var box = try AMPBox(["_command": "Ping", "_ask": "1", "value": "1"]).serialized()
        let start = box.readSlice(length: 10)!
        let channel = try await RawSocket.connect(port: server.port!)
        let accepting = ContinuousClock.now + .seconds(10)
        while serverLoop.withLockedValue({ $0 }) == nil, ContinuousClock.now < accepting {
            try await Task.sleep(for: .milliseconds(5))
        }
        let loop = try #require(serverLoop.withLockedValue { $0 })
        // The server's loop stops from just before the half-box deadline (the half box is
        // sent after this is scheduled) until well after it, as on a machine too loaded to
        // run it; the rest of the box is sent as the stall begins and waits in the socket.
        // The check then runs late, in the same turn as the stalling task, before the
        // loop reads: it must look again rather than close.
        let rest = box
        loop.scheduleTask(in: .milliseconds(900)) {
            channel.channel.writeAndFlush(rest, promise: nil)
            usleep(1_600_000)
        }
        try await channel.channel.writeAndFlush(start)
        let (bytes, closed) = try await RawSocket.readAll(channel, window: TestTime.scaled(.seconds(4)))
        let answers = String(decoding: bytes, as: UTF8.self).components(separatedBy: "_answer").count - 1
        #expect(answers == 1, "\(answers) of 1 call answered")
        #expect(!closed)
        await server.close()
        try await serverGroup.shutdownGracefully()
    }
}

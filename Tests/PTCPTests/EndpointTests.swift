import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PTCP
import PTCPSimulator
import SwiftASN1
import Testing
import X509

/// Echoes every byte back, and half-closes when the peer does.
final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(mode: .output, promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}

/// A self-signed certificate for "localhost", for TLS over PTCP in tests.
struct TestTLS {
    let certificate: NIOSSLCertificate
    let key: NIOSSLPrivateKey
    let certificatePEM: String
    let keyPEM: String

    init() throws {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("localhost") }
        let now = Date()
        let certificate = try Certificate(version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                                          notValidBefore: now - 60, notValidAfter: now + 3600, issuer: name, subject: name,
                                          signatureAlgorithm: .ecdsaWithSHA256,
                                          extensions: try Certificate.Extensions { SubjectAlternativeNames([.dnsName("localhost")]) },
                                          issuerPrivateKey: .init(key))
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        self.certificate = try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
        self.key = try NIOSSLPrivateKey(bytes: Array(key.derRepresentation), format: .der)
        self.certificatePEM = try certificate.serializeAsPEM().pemString
        self.keyPEM = key.pemRepresentation
    }

    func server() throws -> NIOSSLContext {
        try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key)))
    }

    func client() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([certificate])
        configuration.minimumTLSVersion = .tlsv13
        return try NIOSSLContext(configuration: configuration)
    }
}

/// Sends `total` pattern bytes, then half-closes; collects what comes back and checks it.
final class PatternClient: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let total: Int
    let done: EventLoopPromise<Int>
    private var sent = 0
    private var received = 0
    private var mismatches = 0

    init(total: Int, done: EventLoopPromise<Int>) {
        self.total = total
        self.done = done
    }

    private var started = false

    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context) }

    private func pump(_ context: ChannelHandlerContext) {
        guard started else { return }
        while sent < total, context.channel.isWritable {
            // `sent` moves before the write: a write can re-enter pump (through a
            // writability change), and the nested call must start after this chunk.
            let base = UInt64(sent)
            let count = min(64 * 1024, total - sent)
            sent += count
            context.write(wrapOutboundOut(ByteBuffer(bytes: (0..<count).map { PTCPSimulation.patternByte(at: base + UInt64($0)) })), promise: nil)
        }
        context.flush()
        if sent == total { context.close(mode: .output, promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        for byte in buffer.readableBytesView {
            if byte != PTCPSimulation.patternByte(at: UInt64(received)) { mismatches += 1 }
            received += 1
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            started = true
            pump(context)
        }
        if case ChannelEvent.inputClosed = event {
            done.succeed(mismatches == 0 ? received : -1)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}

@Suite("PTCP endpoints on real UDP sockets")
struct EndpointTests {
    @Test("loopback: 2 MB echoed byte-exact over TLS 1.3 on PTCP, half-close both ways")
    func echoOverTLS() async throws {
        let tls = try TestTLS()
        let serverContext = try tls.server()
        let clientContext = try tls.client()
        // A group of its own: debug-built TLS at full speed would hold a shared event loop
        // (and the servers of other tests on it) for seconds.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await PTCPEndpoint.bind(host: "127.0.0.1", port: 0, group: group) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverContext))
                try channel.pipeline.syncOperations.addHandler(EchoHandler())
            }
        }
        let client = try await PTCPEndpoint.bind(host: "127.0.0.1", port: 0, group: group)
        let total = 2_000_000
        let done = group.any().makePromise(of: Int.self)
        _ = try await client.connect(to: server.localAddress) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: clientContext, serverHostname: "localhost"))
                try channel.pipeline.syncOperations.addHandler(PatternClient(total: total, done: done))
            }
        }
        let echoed = try await done.futureResult.get()
        #expect(echoed == total)
        #expect(try await server.droppedDatagrams() == 0)
        await client.close()
        await server.close()
        try await group.shutdownGracefully()
    }

    @Test("stray datagrams (not PTCP, unknown connection, wrong sender) are dropped and counted")
    func strayDatagrams() async throws {
        let server = try await PTCPEndpoint.bind(host: "127.0.0.1", port: 0) { $0.pipeline.addHandler(EchoHandler()) }
        let sender = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        for payload: [UInt8] in [Array("NAT!".utf8), [2] + [UInt8](repeating: 0, count: 40), PTCPPacket(flags: .ping, destinationID: 12345, packetNumber: 1).encoded()] {
            try await sender.writeAndFlush(AddressedEnvelope(remoteAddress: server.localAddress, data: ByteBuffer(bytes: payload)))
        }
        var dropped = 0
        for _ in 0..<100 where dropped < 3 {
            try await Task.sleep(for: .milliseconds(10))
            dropped = try await server.droppedDatagrams()
        }
        #expect(dropped == 3)
        try await sender.close()
        await server.close()
    }

    @Test("a SYN flood from one host: past half the cap callers must prove their address before their pipeline (TLS) starts; past the cap SYNs are dropped; a real caller still connects (review M12)")
    func halfOpenCap() async throws {
        let opened = NIOLockedValueBox(0)
        let tls = try TestTLS()
        let serverContext = try tls.server()
        let clientContext = try tls.client()
        // Half-open connections that time out free their slots: none may, during the test.
        var configuration = PTCPConfiguration()
        configuration.handshakeTimeout = .seconds(300)
        configuration.idleTimeout = .seconds(300)
        let server = try await PTCPEndpoint.bind(host: "127.0.0.1", port: 0, configuration: configuration) { channel in
            opened.withLockedValue { $0 += 1 }
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandlers(NIOSSLServerHandler(context: serverContext), EchoHandler())
            }
        }
        let flooder = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        var sourceID: UInt64 = 0
        func flood(_ count: Int) async throws {
            for _ in 0..<count {
                sourceID += 1
                let syn = PTCPPacket(destinationID: 0, packetNumber: 0, handshake: .init(sourceID: sourceID, initialMaxData: 65536), padding: 1200)
                try await flooder.writeAndFlush(AddressedEnvelope(remoteAddress: server.localAddress, data: ByteBuffer(bytes: syn.encoded())))
            }
        }
        func settle(until done: @Sendable () async throws -> Bool) async throws {
            for _ in 0..<300 where try await !done() { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(200))
        }
        let limit = configuration.maximumHalfOpenPerHost
        // 12 spoofed-looking SYNs: the first half of the cap get a pipeline, the rest only a SYN-ACK.
        try await flood(12)
        try await settle { opened.withLockedValue { $0 } >= limit / 2 }
        #expect(opened.withLockedValue { $0 } == limit / 2)
        // A real caller in the middle of it proves its address, then TLS runs (a round trip later).
        let client = try await PTCPEndpoint.bind(host: "127.0.0.1", port: 0)
        let done = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
        _ = try await client.connect(to: server.localAddress) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandlers(try NIOSSLClientHandler(context: clientContext, serverHostname: "localhost"),
                                                                PatternClient(total: 100_000, done: done))
            }
        }
        #expect(try await done.futureResult.get() == 100_000)
        #expect(opened.withLockedValue { $0 } == limit / 2 + 1)
        // Past the cap, SYNs are dropped, and none of the ones still taken gets a pipeline.
        let droppedBefore = try await server.droppedDatagrams()
        try await flood(100)
        try await settle { try await server.droppedDatagrams() - droppedBefore >= 100 - limit }
        #expect(try await server.droppedDatagrams() - droppedBefore >= 100 - limit)
        #expect(opened.withLockedValue { $0 } == limit / 2 + 1)
        await client.close()
        try await flooder.close()
        await server.close()
    }

    @Test("connecting to a port where nobody answers fails with a handshake timeout")
    func nobodyThere() async throws {
        var configuration = PTCPConfiguration()
        configuration.handshakeTimeout = .milliseconds(1500)
        let silent = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let client = try await PTCPEndpoint.bind(host: "127.0.0.1", port: 0, configuration: configuration)
        await #expect(throws: PTCPConnectionError.handshakeTimedOut) {
            _ = try await client.connect(to: silent.localAddress!)
        }
        await client.close()
        try await silent.close()
    }
}

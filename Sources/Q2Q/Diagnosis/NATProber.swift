import Foundation
import Locking
import NIOCore
import NIOPosix

/// Runs RFC 5780's NAT behaviour tests against a presence server's discovery sockets
/// (``AddressDiscoveryMessage/NATTest``), each from a fresh local UDP socket so that
/// no test sees a mapping or filter state another one opened. The tests run side by
/// side: the whole takes about the longest wait (an answer that should not come, or
/// the lifetime probe).
public struct NATProber: Sendable {
    public var server: SocketAddress
    /// How long a test waits for an answer (sent three times within it).
    public var answerTimeout: Duration = .milliseconds(1200)
    /// How long the lifetime probe leaves a mapping idle (at most 5 s).
    public var lifetimeProbe: Duration = .seconds(3)
    let group: any EventLoopGroup

    public init(server: SocketAddress, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.server = server
        self.group = group
    }

    /// Every test; a behaviour with `udpWorks == false` when the server never answered.
    public func run() async throws -> NATBehaviour {
        let first = try await ProbeSocket.open(group: group)
        defer { first.close() }
        guard let (mapped, other) = try await first.test(.init(), to: server, timeout: answerTimeout) else {
            return NATBehaviour(udpWorks: false)
        }
        // "0.0.0.0": the server listens on every address; its other port is on the one we asked.
        let otherPort = other.map { HostPort(host: $0.host == "0.0.0.0" ? (server.ipAddress ?? $0.host) : $0.host, port: $0.port) }
        let secondAddress = otherPort.flatMap { $0.host != server.ipAddress ? $0.host : nil }
        let serverPort = server.port ?? 0
        let isLocal = Self.localAddresses().contains(mapped.host) && mapped.port == first.localPort

        async let mappingClass: NATBehaviour.Mapping? = {
            var towardsOtherAddress: HostPort?
            if let secondAddress, let target = try? SocketAddress(ipAddress: secondAddress, port: serverPort) {
                towardsOtherAddress = try await first.test(.init(), to: target, timeout: answerTimeout)?.mapped
            }
            var towardsBoth: HostPort?
            if let otherPort, let target = try? SocketAddress(ipAddress: otherPort.host, port: otherPort.port) {
                towardsBoth = try await first.test(.init(), to: target, timeout: answerTimeout)?.mapped
            }
            return NATBehaviour.classifyMapping(first: mapped, otherAddress: towardsOtherAddress, otherBoth: towardsBoth, isLocal: isLocal)
        }()
        async let fromOtherAddressAndPort: Bool? = secondAddress == nil || otherPort == nil ? nil
            : try await filteringTest(changePort: true, changeAddress: true)
        async let fromOtherPort: Bool = otherPort == nil ? false : try await filteringTest(changePort: true, changeAddress: false)
        async let hairpin: Bool = first.hairpin(to: mapped, timeout: answerTimeout)
        async let outlived: Bool = lifetimeTest()

        let filtering = otherPort == nil ? nil
            : NATBehaviour.classifyFiltering(fromOtherAddressAndPort: try await fromOtherAddressAndPort, fromOtherPort: try await fromOtherPort)
        return NATBehaviour(udpWorks: true, mappedAddress: mapped, mapping: try await mappingClass, filtering: filtering,
                            portPreserved: mapped.port == first.localPort, hairpinning: await hairpin,
                            mappingLifetimeProbe: Double(lifetimeProbe.components.seconds) + Double(lifetimeProbe.components.attoseconds) / 1e18,
                            mappingOutlivedProbe: try await outlived,
                            serverHasSecondAddress: secondAddress != nil)
    }

    /// From a fresh socket: a plain test opens the mapping towards the server's first
    /// socket; then whether an answer from the other socket(s) gets in.
    private func filteringTest(changePort: Bool, changeAddress: Bool) async throws -> Bool {
        let socket = try await ProbeSocket.open(group: group)
        defer { socket.close() }
        guard try await socket.test(.init(), to: server, timeout: answerTimeout) != nil else { return false }
        let test = AddressDiscoveryMessage.NATTest(changePort: changePort, changeAddress: changeAddress)
        return try await socket.test(test, to: server, timeout: answerTimeout) != nil
    }

    /// From a fresh socket: one test answered `lifetimeProbe` late, with nothing sent
    /// meanwhile. It gets in only if the mapping (and its filter state) lived that long.
    private func lifetimeTest() async throws -> Bool {
        let socket = try await ProbeSocket.open(group: group)
        defer { socket.close() }
        let milliseconds = lifetimeProbe.components.seconds * 1000 + lifetimeProbe.components.attoseconds / 1_000_000_000_000_000
        let delay = UInt16(clamping: min(max(milliseconds, 0), Int64(AddressDiscoveryMessage.NATTest.maximumDelay)))
        // Sent once only: a resend would refresh the mapping the wait is measuring.
        return try await socket.test(.init(delay: delay), to: server, timeout: .milliseconds(Int64(delay)) + answerTimeout, resend: false) != nil
    }

    /// This host's interface addresses (to tell "no NAT").
    static func localAddresses() -> Set<String> {
        var result: Set<String> = []
        guard let interfaces = try? System.enumerateDevices() else { return result }
        for device in interfaces {
            if let ip = device.address?.ipAddress { result.insert(ip) }
        }
        return result
    }
}

/// One local UDP socket for the tests: answers are matched to requests by transaction.
final class ProbeSocket: Sendable {
    private let channel: any Channel
    private let waiting = Locked<[[UInt8]: CheckedContinuation<(HostPort, HostPort?)?, Never>]>([:])
    private let hairpinToken = Locked<(token: [UInt8], continuation: CheckedContinuation<Bool, Never>)?>(nil)

    private init(channel: any Channel) { self.channel = channel }

    static func open(group: any EventLoopGroup) async throws -> ProbeSocket {
        let box = NIOLockedBox()
        let channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Receiver(box: box)) }
            }
            .bind(host: "0.0.0.0", port: 0).get()
        let socket = ProbeSocket(channel: channel)
        box.socket.withLock { $0 = socket }
        return socket
    }

    var localPort: Int { channel.localAddress?.port ?? 0 }

    /// Sends `test` (three times within `timeout`, unless `resend` is false) and returns
    /// the address the server saw and its other address; nil without an answer.
    func test(_ test: AddressDiscoveryMessage.NATTest, to server: SocketAddress, timeout: Duration,
              resend: Bool = true) async throws -> (mapped: HostPort, other: HostPort?)? {
        let transaction = (0..<AddressDiscoveryMessage.transactionSize).map { _ in UInt8.random(in: .min ... .max) }
        let bytes = AddressDiscoveryMessage.test(transaction: transaction, test).bytes!
        let channel = self.channel
        let sender = Task {
            for pause in resend ? [Duration.zero, .milliseconds(250), .milliseconds(500)] : [.zero] {
                try await Task.sleep(for: pause)
                try? await channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: bytes)))
            }
        }
        defer { sender.cancel() }
        let answer = await withCheckedContinuation { continuation in
            waiting.withLock { $0[transaction] = continuation }
            // Left to fire: by then the answer has usually taken the continuation.
            channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [self] in
                waiting.withLock { $0.removeValue(forKey: transaction) }?.resume(returning: nil)
            }
        }
        return answer.map { (mapped: $0.0, other: $0.1) }
    }

    /// Sends a token to `mapped` (our own public address) and says whether it came back.
    func hairpin(to mapped: HostPort, timeout: Duration) async -> Bool {
        guard let target = try? SocketAddress(ipAddress: mapped.host, port: mapped.port) else { return false }
        let token = Array("Q2Q!".utf8) + (0..<12).map { _ in UInt8.random(in: .min ... .max) }
        return await withCheckedContinuation { continuation in
            hairpinToken.withLock { $0 = (token, continuation) }
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: ByteBuffer(bytes: token)), promise: nil)
            channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [self] in
                let pending = hairpinToken.withLock { state -> CheckedContinuation<Bool, Never>? in
                    guard let current = state, current.token == token else { return nil }
                    state = nil
                    return current.continuation
                }
                pending?.resume(returning: false)
            }
        }
    }

    fileprivate func received(_ bytes: [UInt8]) {
        if case .testAnswer(let transaction, let address, let other)? = AddressDiscoveryMessage(decoding: bytes) {
            waiting.withLock { $0.removeValue(forKey: transaction) }?.resume(returning: (address, other))
        } else {
            let matched = hairpinToken.withLock { state -> CheckedContinuation<Bool, Never>? in
                guard let pending = state, pending.token == bytes else { return nil }
                state = nil
                return pending.continuation
            }
            matched?.resume(returning: true)
        }
    }

    func close() {
        channel.close(promise: nil)
        let pending = waiting.withLock { waiting in
            defer { waiting = [:] }
            return Array(waiting.values)
        }
        for continuation in pending { continuation.resume(returning: nil) }
        hairpinToken.withLock { state in defer { state = nil }; return state?.continuation }?.resume(returning: false)
    }

    /// Lets the handler, made before the socket, reach it.
    private final class NIOLockedBox: Sendable {
        let socket = Locked<ProbeSocket?>(nil)
    }

    private final class Receiver: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let box: NIOLockedBox

        init(box: NIOLockedBox) { self.box = box }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard envelope.data.readableBytes <= AddressDiscoveryMessage.requestSize else { return }
            box.socket.withLock { $0 }?.received(Array(envelope.data.readableBytesView))
        }

        /// ICMP unreachable (the server has no such socket): the wait's timer answers.
        func errorCaught(context: ChannelHandlerContext, error: any Error) {}
    }
}

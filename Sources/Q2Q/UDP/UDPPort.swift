import Foundation
import Locking
import NIOCore
import NIOPosix
import PTCP

/// One of a node's UDP sockets: a ``PTCPEndpoint`` for streams in and out, plus the two
/// exchanges of NAT traversal that are not PTCP — asking a presence server which
/// address it sees (the NAT mapping to publish), and seeding a NAT towards a peer.
final class UDPPort: Sendable {
    let endpoint: PTCPEndpoint
    private let waiters: DiscoveryWaiters

    /// PTCP for Q2Q paths: the SYN is resent after 250 ms rather than 1 s, because
    /// hole punching drops a first SYN that overtakes the peer's seed.
    static let configuration: PTCPConfiguration = {
        var configuration = PTCPConfiguration()
        configuration.initialRetransmissionTimeout = .milliseconds(250)
        return configuration
    }()

    private init(endpoint: PTCPEndpoint, waiters: DiscoveryWaiters) {
        self.endpoint = endpoint
        self.waiters = waiters
    }

    static func bind(host: String, port: Int = 0, group: any EventLoopGroup,
                     accepting initializer: PTCPEndpoint.Initializer? = nil) async throws -> UDPPort {
        let waiters = DiscoveryWaiters()
        let endpoint = try await PTCPEndpoint.bind(host: host, port: port, configuration: configuration, group: group,
                                                   accepting: initializer, foreign: { envelope in waiters.received(envelope) })
        return UDPPort(endpoint: endpoint, waiters: waiters)
    }

    var localPort: Int { endpoint.localAddress.port ?? 0 }

    /// The address `server` sees this socket send from, with the server's proof of it,
    /// or `nil` when no answer comes (UDP blocked, or a server without UDP). Asks up to
    /// three times within `timeout`.
    func discoverMapping(via server: SocketAddress, timeout: Duration = .milliseconds(1500)) async -> DiscoveredAddress? {
        var random = SystemRandomNumberGenerator()
        let transaction = (0..<AddressDiscoveryMessage.transactionSize).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        let request = ByteBuffer(bytes: AddressDiscoveryMessage.request(transaction: transaction).bytes!)
        let endpoint = self.endpoint
        let sender = Task {
            for pause in [Duration.zero, .milliseconds(250), .milliseconds(500)] {
                try await Task.sleep(for: pause)
                try? await endpoint.send(datagram: request, to: server)
            }
        }
        defer { sender.cancel() }
        return await waiters.wait(for: transaction, from: server, timeout: timeout)
    }

    /// Sends seeds towards `address` (at once, then a few more over the next two
    /// seconds, in case the first are lost) so that our NAT lets its answers in.
    func seed(towards address: SocketAddress) {
        let endpoint = self.endpoint
        Task {
            for pause in [Duration.zero, .milliseconds(50), .milliseconds(200), .milliseconds(750), .milliseconds(1000)] {
                try await Task.sleep(for: pause)
                guard endpoint.isOpen else { return }
                try? await endpoint.send(datagram: ByteBuffer(bytes: NATSeed.bytes), to: address)
            }
        }
    }

    func close() async { await endpoint.close() }
}

/// Where a presence server saw one of our UDP sockets send from (our NAT's mapping, or
/// over IPv6 our own address), and its proof of that (``AddressProofs``) when it makes them.
struct DiscoveredAddress: Hashable, Sendable {
    var address: HostPort
    var proof: [UInt8]?
}

/// Discovery requests waiting for their answer, by transaction id.
private final class DiscoveryWaiters: Sendable {
    private let waiting = Locked<[[UInt8]: (server: SocketAddress, continuation: CheckedContinuation<DiscoveredAddress?, Never>)]>([:])

    func wait(for transaction: [UInt8], from server: SocketAddress, timeout: Duration) async -> DiscoveredAddress? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                waiting.withLock { $0[transaction] = (server, continuation) }
                Task { [self] in
                    try? await Task.sleep(for: timeout)
                    resume(transaction, with: nil)   // nothing when the answer came first
                }
                if Task.isCancelled { resume(transaction, with: nil) }
            }
        } onCancel: {
            resume(transaction, with: nil)
        }
    }

    /// An answer counts only from the server that was asked.
    func received(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard case .answer(let transaction, let address, let proof)? = AddressDiscoveryMessage(decoding: envelope.data.readableBytesView) else { return }
        let expected = waiting.withLock { $0[transaction]?.server }
        guard expected == envelope.remoteAddress else { return }
        resume(transaction, with: DiscoveredAddress(address: address, proof: proof))
    }

    private func resume(_ transaction: [UInt8], with address: DiscoveredAddress?) {
        waiting.withLock { $0.removeValue(forKey: transaction) }?.continuation.resume(returning: address)
    }
}

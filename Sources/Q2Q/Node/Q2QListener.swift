import AMP
import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// Incoming streams for one address and service. Created by ``Q2QNode/listen(as:service:description:)``;
/// registered with the address's presence server, and re-registered when that
/// connection is lost, until ``close()``.
public final class Q2QListener: Sendable {
    public let address: Q2QAddress
    public let service: String
    public let description: String
    /// Verified incoming streams, until the listener closes.
    public let connections: AsyncStream<Q2QStream>

    let identity: Q2QIdentity
    let node: Q2QNode
    private let continuation: AsyncStream<Q2QStream>.Continuation
    private let state = Mutex(State())

    private struct State {
        var acceptor: (any Channel)?
        var supervisor: Task<Void, Never>?
        /// Listener ids handed out in `inbound` answers: who may claim each, until when.
        var pending: [String: (from: Q2QAddress, expires: Date)] = [:]
        var closed = false
    }

    /// How long an id from an `inbound` answer may be claimed (the original's 120 s).
    static let claimLifetime: TimeInterval = 120

    init(identity: Q2QIdentity, service: String, description: String, node: Q2QNode) {
        self.identity = identity
        self.address = identity.address
        self.service = service
        self.description = description
        self.node = node
        (connections, continuation) = AsyncStream.makeStream(of: Q2QStream.self)
    }

    func attach(acceptor: any Channel, supervisor: Task<Void, Never>) {
        state.withLock {
            $0.acceptor = acceptor
            $0.supervisor = supervisor
        }
    }

    private let tls = Mutex<NIOSSLContext?>(nil)

    /// The TLS server context presenting our identity (made once).
    func tlsContext() throws -> NIOSSLContext {
        try tls.withLock { context in
            if let context { return context }
            let made = try NIOSSLContext(configuration: try identity.tlsConfiguration(server: true, verifyingPeer: true))
            context = made
            return made
        }
    }

    /// Whether `id` is an unexpired id we handed out (not consumed: the path claims it).
    func hasPendingClaim(_ id: String, now: Date = Date()) -> Bool {
        state.withLock { ($0.pending[id]?.expires).map { $0 > now } ?? false }
    }

    /// The port of the direct (`tcp@`) path.
    var port: Int? { state.withLock { $0.acceptor?.localAddress?.port } }

    /// An offer for `from`, with a fresh unguessable id.
    func offer(for from: Q2QAddress, publishing hosts: [String], now: Date = Date()) -> ListenerOffer? {
        guard let port else { return nil }
        let id = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max)) }.joined()
        let expires = now + Self.claimLifetime
        state.withLock { state in
            state.pending = state.pending.filter { $0.value.expires > now }
            state.pending[id] = (from, expires)
        }
        return ListenerOffer(id: id, methods: hosts.map { .tcp(HostPort(host: $0, port: port)) },
                             expires: AmpTime(expires), description: description)
    }

    /// `Retrieve-Connection` on a verified path: the id must be one we handed to the
    /// address the path's certificate names, unused and not expired.
    func claim(_ id: String, on connection: AMPConnection) async throws -> (AMPEmpty, AMPProtocolSwitch) {
        guard let certificate = try await connection.peerCertificate(),
              let peer = try Q2QCertificate(certificate).address else {
            throw ConnectionError.noSuchConnection("no verified peer on this path")
        }
        let now = Date()
        let claim = state.withLock { $0.pending.removeValue(forKey: id) }
        guard let claim, claim.expires > now, claim.from == peer else {
            throw ConnectionError.noSuchConnection("no connection '\(id.prefix(64))' for \(peer)")
        }
        let method: Q2QMethod = connection.channel is VirtualChannel ? .virtual
            : connection.localAddress.flatMap(HostPort.init).map(Q2QMethod.tcp) ?? .unknown("tcp")
        let stream: @Sendable (NIOAsyncChannel<ByteBuffer, ByteBuffer>) -> Q2QStream = { [address, service] channel in
            Q2QStream(channel: channel, local: address, peer: peer, service: service, method: method)
        }
        let continuation = self.continuation
        return (AMPEmpty(), { channel in
            continuation.yield(stream(try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: Q2QStream.channelConfiguration)))
        })
    }

    /// Stops listening: unregisters (by closing the registration's renewal), closes the
    /// direct port and ends ``connections``.
    public func close() async {
        let (acceptor, supervisor) = state.withLock { state in
            state.closed = true
            return (state.acceptor, state.supervisor)
        }
        supervisor?.cancel()
        try? await acceptor?.close()
        continuation.finish()
        node.forget(self)
    }

    var isClosed: Bool { state.withLock { $0.closed } }
}

import AMP
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

/// What runs on every new path — a direct TCP connection, PTCP or a relayed virtual
/// channel — before the application gets it: TLS 1.3 with both Q2Q certificates
/// verified, then AMP inside TLS carrying `Retrieve-Connection` with the listener id.
/// (The original spoke AMP in clear on direct paths and the listener id was the only
/// credential.)
///
/// The connecting side sends the claim as soon as TLS has verified the listener and
/// hands the path to its application at once, without waiting for the answer: the
/// application's first bytes follow the claim, saving a round trip. The listener hands
/// its side over only once the claim is accepted, and the answer is read ahead of the
/// connecting application: a refused claim closes the stream with the listener's reason.
enum PathHandshake {
    /// The listening side's pipeline. Call on the channel's event loop.
    static func installAcceptor(on channel: any Channel, for listener: Q2QListener, tls: NIOSSLContext, logger: Logger) throws {
        let verification = Q2QPeerVerifier.verifyingClaimedAddress(authority: { [node = listener.node] domain in
            await node.callerAuthority(for: domain)
        })
        // The claim trusts the path's certificate: it must be one verified on this path,
        // not a resumed session's (the gate closes those).
        let gate = TLSPeerGate()
        try channel.pipeline.syncOperations.addHandlers(
            NIOSSLServerHandler(context: tls, customVerificationCallback: gate.verification(wrapping: verification)), gate)
        let claimed = ClaimFlag()
        var responders = AMPResponders()
        responders.registerProtocolSwitch(RetrieveConnection.self) { arguments, context in
            let (answer, install) = try await listener.claim(arguments.text, on: context.connection)
            return (answer, { channel in
                claimed.set()
                try install(channel)
            })
        }
        responders.registerWhoAmI()
        _ = try AMPConnection.install(on: channel, responders: responders, isTCPServer: true, logger: logger)
        // A path that has not completed TLS and its claim in time is closed: a caller
        // that connects and says nothing must not hold our descriptors or a relay slot.
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(listener.node.configuration.pathClaimTimeout)) {
            if !claimed.isSet { channel.close(promise: nil) }
        }
        channel.closeFuture.whenComplete { _ in deadline.cancel() }
    }

    /// The connecting side: TLS as `identity` expecting `peer` (verified against
    /// `authority`), then the claim of the listener id `ticket` gives (it may wait for
    /// it: a remembered path is dialled before the presence server has answered).
    /// Closes the path on failure.
    static func claim(on channel: any Channel, as identity: Q2QIdentity, peer: Q2QAddress, authority: Q2QCertificate,
                      listener ticket: @escaping @Sendable () async throws -> ListenerClaim, service: String, method: Q2QMethod,
                      logger: Logger) async throws -> Q2QPath {
        let connector: Connector
        do {
            let tls = try connectorTLS(as: identity)
            connector = try await channel.eventLoop.submit {
                try installConnector(on: channel, tls: tls, peer: peer, authority: authority, logger: logger)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return try await claim(ticket, over: connector, on: channel, as: identity, peer: peer, service: service, method: method,
                               logger: logger)
    }

    /// The connecting side's TLS and AMP on a path, before the claim.
    struct Connector {
        var connection: AMPConnection
        /// Completes when TLS has verified the peer; fails with the handshake's error.
        var handshake: EventLoopFuture<Void>
    }

    /// The TLS client context presenting `identity`.
    static func connectorTLS(as identity: Q2QIdentity) throws -> NIOSSLContext {
        try NIOSSLContext(configuration: try identity.tlsConfiguration(server: false, verifyingPeer: true))
    }

    /// The connecting side's TLS and AMP, added to `channel` on its event loop. Added
    /// before a PTCP channel starts, TLS's first flight rides in the SYN.
    static func installConnector(on channel: any Channel, tls: NIOSSLContext, peer: Q2QAddress, authority: Q2QCertificate,
                                 logger: Logger) throws -> Connector {
        let gate = TLSPeerGate()
        let verification = gate.verification(wrapping: Q2QPeerVerifier(expected: peer, authority: authority).tlsVerification)
        let handshake = channel.eventLoop.makePromise(of: Void.self)
        do {
            try channel.pipeline.syncOperations.addHandlers(
                try NIOSSLClientHandler(context: tls, serverHostname: nil, customVerificationCallback: verification),
                gate, TLSHandshakeWatcher(handshake))
            let connection = try AMPConnection.install(on: channel, responders: AMPResponders(), isTCPServer: false, logger: logger)
            return Connector(connection: connection, handshake: handshake.futureResult)
        } catch {
            handshake.fail(error)
            throw error
        }
    }

    /// Once TLS has verified the peer, claims the listener id over the connection
    /// ``installConnector`` made and hands the path to the application without waiting
    /// for the answer (see the type's comment). Closes the path on failure, and when
    /// the task is cancelled (a race that another path won).
    static func claim(_ ticket: @escaping @Sendable () async throws -> ListenerClaim, over connector: Connector, on channel: any Channel, as identity: Q2QIdentity,
                      peer: Q2QAddress, service: String, method: Q2QMethod, logger: Logger) async throws -> Q2QPath {
        do {
            let handoff = channel.eventLoop.makePromise(of: Q2QPath.End.self)
            try await withTaskCancellationHandler {
                do {
                    try await connector.handshake.get()
                    // One path per offer sends its claim: the listener accepts an id
                    // once, and the path that claims it must be the one that wins.
                    let claim = try await ticket()
                    guard claim.take() else { throw Q2QNodeError("another path claimed this listener offer first") }
                    try await connector.connection.switchProtocolPipelined(RetrieveConnection.self, .init(identifier: claim.id)) { channel in
                        handoff.succeed(try claim.adoption.adopt(channel, peer: peer, isListener: false, logger: logger))
                    }
                } catch {
                    handoff.fail(error)
                    throw error
                }
            } onCancel: {
                channel.close(promise: nil)
            }
            return Q2QPath(end: try await handoff.futureResult.get(), local: identity.address, peer: peer,
                           service: service, method: method)
        } catch {
            // Not awaited: a TLS close waits up to 5 s for the peer's close_notify, and
            // a losing attempt must not hold up the race that beat it.
            channel.close(promise: nil)
            throw error
        }
    }
}

/// A listener id from an `inbound` answer, shared by the attempts at that offer's
/// methods. The listener accepts each id once, so only the first attempt to verify its
/// peer may send the claim; the others have lost the race.
final class ListenerClaim: Sendable {
    let id: String
    /// What the path that claims it becomes.
    let adoption: PathAdoption
    private let taken = Atomic<Bool>(false)

    init(_ id: String, adoption: PathAdoption) {
        self.id = id
        self.adoption = adoption
    }

    /// True for the first caller only.
    func take() -> Bool {
        !taken.exchange(true, ordering: .relaxed)
    }
}

/// Completes a promise when TLS's handshake has finished (the peer's certificate
/// verified), or fails it with the first error or when the channel closes first.
private final class TLSHandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private var handshake: EventLoopPromise<Void>?

    init(_ handshake: EventLoopPromise<Void>) {
        self.handshake = handshake
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent, let handshake {
            self.handshake = nil
            handshake.succeed(())
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        handshake?.fail(error)
        handshake = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshake?.fail(ChannelError.ioOnClosedChannel)
        handshake = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshake?.fail(ChannelError.ioOnClosedChannel)
        handshake = nil
    }
}

/// Set once a path's claim was accepted (read by its deadline).
private final class ClaimFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

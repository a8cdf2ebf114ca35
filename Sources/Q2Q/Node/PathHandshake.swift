import AMP
import Logging
import NIOCore
import NIOSSL

/// What runs on every new path — a direct TCP connection or a relayed virtual
/// channel — before the application gets it: TLS 1.3 with both Q2Q certificates
/// verified, then AMP inside TLS carrying `Retrieve-Connection` with the listener id;
/// its answer hands the path to the application. (The original spoke AMP in clear on
/// direct paths and the listener id was the only credential.)
enum PathHandshake {
    /// The listening side's pipeline. Call on the channel's event loop.
    static func installAcceptor(on channel: any Channel, for listener: Q2QListener, tls: NIOSSLContext, logger: Logger) throws {
        let verification = Q2QPeerVerifier.verifyingClaimedAddress(authority: { [node = listener.node] domain in
            await node.authority(for: domain)
        })
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls, customVerificationCallback: verification))
        var responders = AMPResponders()
        responders.registerProtocolSwitch(RetrieveConnection.self) { arguments, context in
            try await listener.claim(arguments.text, on: context.connection)
        }
        responders.registerWhoAmI()
        _ = try AMPConnection.install(on: channel, responders: responders, isTCPServer: true, logger: logger)
    }

    /// The connecting side: TLS as `identity` expecting `peer` (verified against
    /// `authority`), then the claim of `listenerID`. Closes the path on failure.
    static func claim(on channel: any Channel, as identity: Q2QIdentity, peer: Q2QAddress, authority: Q2QCertificate,
                      listenerID: String, service: String, method: Q2QMethod, logger: Logger) async throws -> Q2QStream {
        let connection: AMPConnection
        do {
            let tls = try connectorTLS(as: identity)
            connection = try await channel.eventLoop.submit {
                try installConnector(on: channel, tls: tls, peer: peer, authority: authority, logger: logger)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return try await claim(listenerID, over: connection, on: channel, as: identity, peer: peer, service: service, method: method)
    }

    /// The TLS client context presenting `identity`.
    static func connectorTLS(as identity: Q2QIdentity) throws -> NIOSSLContext {
        try NIOSSLContext(configuration: try identity.tlsConfiguration(server: false, verifyingPeer: true))
    }

    /// The connecting side's TLS and AMP, added to `channel` on its event loop. Added
    /// before a PTCP channel starts, TLS's first flight rides in the SYN.
    static func installConnector(on channel: any Channel, tls: NIOSSLContext, peer: Q2QAddress, authority: Q2QCertificate,
                                 logger: Logger) throws -> AMPConnection {
        let verification = Q2QPeerVerifier(expected: peer, authority: authority).tlsVerification
        try channel.pipeline.syncOperations.addHandler(
            try NIOSSLClientHandler(context: tls, serverHostname: nil, customVerificationCallback: verification))
        return try AMPConnection.install(on: channel, responders: AMPResponders(), isTCPServer: false, logger: logger)
    }

    /// Claims `listenerID` over the AMP connection ``installConnector`` made; its answer
    /// hands the path to the application. Closes the path on failure, and when the task
    /// is cancelled (a race that another path won).
    static func claim(_ listenerID: String, over connection: AMPConnection, on channel: any Channel, as identity: Q2QIdentity,
                      peer: Q2QAddress, service: String, method: Q2QMethod) async throws -> Q2QStream {
        do {
            let handoff = channel.eventLoop.makePromise(of: NIOAsyncChannel<ByteBuffer, ByteBuffer>.self)
            try await withTaskCancellationHandler {
                do {
                    _ = try await connection.switchProtocol(RetrieveConnection.self, .init(identifier: listenerID)) { channel in
                        handoff.succeed(try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: Q2QStream.channelConfiguration))
                    }
                } catch {
                    handoff.fail(error)
                    throw error
                }
            } onCancel: {
                channel.close(promise: nil)
            }
            return Q2QStream(channel: try await handoff.futureResult.get(), local: identity.address, peer: peer,
                             service: service, method: method)
        } catch {
            // Not awaited: a TLS close waits up to 5 s for the peer's close_notify, and
            // a losing attempt must not hold up the race that beat it.
            channel.close(promise: nil)
            throw error
        }
    }
}

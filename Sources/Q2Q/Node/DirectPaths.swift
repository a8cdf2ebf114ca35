import AMP
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// The direct (`tcp@`) path: a listener's TCP port, and dialing it.
///
/// On a new path TLS comes first — both sides present Q2Q certificates and verify the
/// other's against its domain's CA — then AMP inside TLS carries `Retrieve-Connection`
/// with the listener id, and the answer switches the path to the application. (The
/// original spoke AMP in clear and the listener id was the only credential.)
enum DirectPaths {
    /// Listens on `host:port` for `listener`; each verified path that claims one of its
    /// ids becomes a stream.
    static func bindAcceptor(host: String, port: Int, listener: Q2QListener, group: any EventLoopGroup,
                             logger: Logger) async throws -> any Channel {
        let tls = try listener.identity.tlsConfiguration(server: true, verifyingPeer: true)
        let sslContext = try NIOSSLContext(configuration: tls)
        let verification = Q2QPeerVerifier.verifyingClaimedAddress(authority: { domain in
            await listener.node.authority(for: domain)
        })
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLServerHandler(context: sslContext, customVerificationCallback: verification))
                    var responders = AMPResponders()
                    responders.registerProtocolSwitch(RetrieveConnection.self) { arguments, context in
                        try await listener.claim(arguments.text, on: context.connection)
                    }
                    responders.registerImmediate(WhoAmI.self) { _, context in
                        guard let remote = context.remoteAddress.flatMap(HostPort.init) else {
                            throw ConnectionError.verifyError("the caller's address is unknown")
                        }
                        return WhoAmI.Response(address: remote)
                    }
                    _ = try AMPConnection.install(on: channel, responders: responders, isTCPServer: true, logger: logger)
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Dials `address`, runs TLS as `identity` expecting `peer` (verified against
    /// `authority`), and claims `listenerID`. Cancellation closes the path.
    static func dial(_ address: HostPort, as identity: Q2QIdentity, peer: Q2QAddress, authority: Q2QCertificate,
                     listenerID: String, service: String, group: any EventLoopGroup, logger: Logger,
                     connectTimeout: TimeAmount = .seconds(10)) async throws -> Q2QStream {
        let tls = try identity.tlsConfiguration(server: false, verifyingPeer: true)
        let sslContext = try NIOSSLContext(configuration: tls)
        let verification = Q2QPeerVerifier(expected: peer, authority: authority).tlsVerification
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(connectTimeout)
            .connect(host: address.host, port: address.port).get()
        return try await withTaskCancellationHandler {
            do {
                let connection = try await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: sslContext, serverHostname: nil, customVerificationCallback: verification))
                    return try AMPConnection.install(on: channel, responders: AMPResponders(), isTCPServer: false, logger: logger)
                }.get()
                let handoff = channel.eventLoop.makePromise(of: NIOAsyncChannel<ByteBuffer, ByteBuffer>.self)
                _ = try await connection.switchProtocol(RetrieveConnection.self, .init(identifier: listenerID)) { channel in
                    handoff.succeed(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
                }
                return Q2QStream(channel: try await handoff.futureResult.get(), local: identity.address, peer: peer,
                                 service: service, method: .tcp(address))
            } catch {
                try? await channel.close()
                throw error
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

import AMP
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// The direct (`tcp@`) path: a listener's TCP port, and dialing it.
enum DirectPaths {
    /// Listens on `host:port` for `listener`; every connection runs ``PathHandshake``.
    static func bindAcceptor(host: String, port: Int, listener: Q2QListener, group: any EventLoopGroup,
                             logger: Logger) async throws -> any Channel {
        let tls = try listener.tlsContext()
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try PathHandshake.installAcceptor(on: channel, for: listener, tls: tls, logger: logger)
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Dials `address` and runs ``PathHandshake/claim``. Cancellation closes the path,
    /// also while the TCP connection is still being made (a SYN towards a filtering NAT
    /// gets no answer, and another method has usually won by then).
    static func dial(_ address: HostPort, as identity: Q2QIdentity, peer: Q2QAddress, authority: Q2QCertificate,
                     listenerID: String, service: String, group: any EventLoopGroup, logger: Logger,
                     connectTimeout: TimeAmount = .seconds(10)) async throws -> Q2QStream {
        let connecting = NIOLockedValueBox<(any Channel)?>(nil)
        return try await withTaskCancellationHandler {
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .connectTimeout(connectTimeout)
                .channelInitializer { channel in
                    connecting.withLockedValue { $0 = channel }
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                .connect(host: address.host, port: address.port).get()
            try Task.checkCancellation()
            return try await PathHandshake.claim(on: channel, as: identity, peer: peer, authority: authority,
                                                 listenerID: listenerID, service: service, method: .tcp(address), logger: logger)
        } onCancel: {
            connecting.withLockedValue { $0 }?.close(promise: nil)
        }
    }
}

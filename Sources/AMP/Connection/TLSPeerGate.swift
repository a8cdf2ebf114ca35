import Locking
import NIOCore
import NIOSSL
import NIOTLS

/// Lets a TLS connection through only once its peer's certificate has been verified on
/// *this* connection, and says which certificate that was.
///
/// A custom verification callback runs only on a full handshake. When a client resumes
/// a session (a TLS 1.3 ticket from an earlier connection to the same context),
/// BoringSSL asks for no certificate and the callback never runs, yet the handshake
/// completes and `peerCertificate()` answers the *earlier* connection's certificate. A
/// side that decides who its peer is from a verification must therefore refuse such
/// handshakes (security review H1: a ticket of mallory's connection, resumed on a
/// connection that claimed to be bob, was taken for bob). NIOSSL offers no switch to
/// stop issuing tickets, so the gate refuses what resumes instead.
///
/// Put ``verification(wrapping:)`` in the TLS handler and the gate right after it: on
/// `handshakeCompleted` the gate either hands the verified leaf to `onVerified` and
/// lets the event (and every record after it) through, or closes the connection and
/// drops whatever the TLS handler still decrypts.
public final class TLSPeerGate: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny
    public typealias InboundOut = NIOAny

    /// The gate refused a handshake: it completed without the peer's certificate being
    /// verified on this connection.
    public struct Unverified: Error, Sendable, CustomStringConvertible {
        public var description: String {
            "TLS handshake completed without the peer's certificate verified on this connection (a resumed session): refused"
        }
    }

    /// The leaf the verification accepted; written from the verification's completion,
    /// read on the event loop when the handshake completes.
    private let verified = VerifiedLeaf()
    private let onVerified: (@Sendable (NIOSSLCertificate) -> Void)?
    private var refused = false

    /// `onVerified` runs on the event loop when the handshake completes, with the leaf
    /// certificate the peer presented and the verification accepted, before any record
    /// that follows the handshake is passed on.
    public init(onVerified: (@Sendable (NIOSSLCertificate) -> Void)? = nil) {
        self.onVerified = onVerified
    }

    /// `verification` as the TLS handler should run it: the same verdict, and an
    /// accepted leaf remembered by this gate before the handshake goes on.
    public func verification(wrapping verification: @escaping AMPTLSVerification) -> AMPTLSVerification {
        { [verified] presented, promise in
            let verdict = promise.futureResult.eventLoop.makePromise(of: NIOSSLVerificationResult.self)
            verdict.futureResult.whenComplete { result in
                if case .success(.certificateVerified) = result, let leaf = presented.first {
                    verified.set(leaf)
                }
                promise.completeWith(result)
            }
            verification(presented, verdict)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshakeCompleted? = event as? TLSUserEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard let leaf = verified.leaf else {
            refused = true
            context.fireErrorCaught(Unverified())
            context.close(promise: nil)
            return
        }
        onVerified?(leaf)
        context.fireUserInboundEventTriggered(event)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Records decrypted while the refused connection closes (TLS waits for the
        // peer's close_notify) go nowhere.
        guard !refused else { return }
        context.fireChannelRead(data)
    }
}

/// The leaf certificate a verification accepted on one connection.
private final class VerifiedLeaf: Sendable {
    private let value = Locked<NIOSSLCertificate?>(nil)

    var leaf: NIOSSLCertificate? { value.withLock { $0 } }

    func set(_ leaf: NIOSSLCertificate) { value.withLock { $0 = leaf } }
}

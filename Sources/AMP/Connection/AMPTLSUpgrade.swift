import NIOCore
import NIOSSL

/// Checks the certificates a TLS peer presented (leaf first) and completes the promise
/// with the verdict. Replaces BoringSSL's own chain verification entirely, so it must
/// check the chain itself. Runs on the channel's event loop; it may complete later.
public typealias AMPTLSVerification = @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResult>) -> Void

/// How one side switches an AMP connection to TLS: the configuration, the name to send
/// in SNI when this side is the TLS client, and, optionally, a verification of the
/// peer's certificates that replaces BoringSSL's (used by Q2Q to check a chain against
/// the CA of the domain the peer claims, with the name and revocation rules of Q2Q).
public struct AMPTLSUpgrade: Sendable {
    public var configuration: TLSConfiguration
    public var serverHostname: String?
    public var verification: AMPTLSVerification?
    /// A context made once from `configuration` and shared by many connections (a
    /// server's), instead of a new one per connection.
    public var context: NIOSSLContext?
    /// With `verification`: runs on the event loop once the handshake has completed with
    /// the peer's certificate verified on this connection, with the leaf it presented,
    /// before any record after the handshake is read. A handshake that completes without
    /// `verification` having run (a resumed session) closes the connection
    /// (``TLSPeerGate``).
    public var onPeerVerified: (@Sendable (NIOSSLCertificate) -> Void)?

    public init(configuration: TLSConfiguration, serverHostname: String? = nil, verification: AMPTLSVerification? = nil) {
        self.configuration = configuration
        self.serverHostname = serverHostname
        self.verification = verification
    }

    public init(context: NIOSSLContext, serverHostname: String? = nil, verification: AMPTLSVerification? = nil) {
        self.configuration = context.configuration
        self.context = context
        self.serverHostname = serverHostname
        self.verification = verification
    }

    /// The handlers for this side, first to last: TLS, and when the peer is verified a
    /// ``TLSPeerGate`` behind it. TLS roles follow TCP roles, as in Twisted: the side
    /// that accepted the TCP connection is the TLS server.
    func makeHandlers(isTCPServer: Bool) throws -> [any ChannelHandler] {
        let context = try self.context ?? NIOSSLContext(configuration: configuration)
        guard let verification else {
            return isTCPServer
                ? [NIOSSLServerHandler(context: context)]
                : [try NIOSSLClientHandler(context: context, serverHostname: serverHostname)]
        }
        let gate = TLSPeerGate(onVerified: onPeerVerified)
        let verify = gate.verification(wrapping: verification)
        let tls: NIOSSLHandler = isTCPServer
            ? NIOSSLServerHandler(context: context, customVerificationCallback: verify)
            : try NIOSSLClientHandler(context: context, serverHostname: serverHostname, customVerificationCallback: verify)
        return [tls, gate]
    }
}

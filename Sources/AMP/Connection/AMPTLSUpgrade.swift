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

    /// The TLS handler for this side. TLS roles follow TCP roles, as in Twisted: the
    /// side that accepted the TCP connection is the TLS server.
    func makeHandler(isTCPServer: Bool) throws -> NIOSSLHandler {
        let context = try self.context ?? NIOSSLContext(configuration: configuration)
        switch (isTCPServer, verification) {
        case (true, nil):
            return NIOSSLServerHandler(context: context)
        case (true, let verify?):
            return NIOSSLServerHandler(context: context, customVerificationCallback: verify)
        case (false, nil):
            return try NIOSSLClientHandler(context: context, serverHostname: serverHostname)
        case (false, let verify?):
            return try NIOSSLClientHandler(context: context, serverHostname: serverHostname, customVerificationCallback: verify)
        }
    }
}

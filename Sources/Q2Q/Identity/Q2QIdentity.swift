import Crypto
import Foundation
import NIOSSL
import X509

/// Who we are to Q2Q peers: an address, its private key, and the certificate its
/// domain signed (or, for a domain, its CA certificate).
public struct Q2QIdentity: Sendable {
    public let address: Q2QAddress
    public let privateKey: P256.Signing.PrivateKey
    public let certificate: Q2QCertificate

    public init(address: Q2QAddress, privateKey: P256.Signing.PrivateKey, certificate: Q2QCertificate) {
        self.address = address
        self.privateKey = privateKey
        self.certificate = certificate
    }

    /// The presence server's identity for one of its domains.
    public init(authority: DomainAuthority) {
        self.init(address: try! Q2QAddress(resource: nil, domain: authority.domain),
                  privateKey: authority.privateKey, certificate: authority.certificate)
    }

    /// A TLS configuration presenting this identity. With `verifyingPeer`, the peer must
    /// present a certificate, which the caller's ``Q2QPeerVerifier`` checks (it replaces
    /// BoringSSL's verification); without, the peer's certificate is not asked for.
    func tlsConfiguration(server: Bool, verifyingPeer: Bool) throws -> TLSConfiguration {
        var configuration = try tlsConfiguration(server: server)
        configuration.certificateVerification = verifyingPeer ? .noHostnameVerification : .none
        return configuration
    }

    /// Q2Q verifies peers itself (``Q2QPeerVerifier``); loading the system's CA bundle
    /// into every TLS context would cost hundreds of KiB per connection for nothing.
    static let noTrustRoots = NIOSSLTrustRoots.certificates([])

    func tlsConfiguration(server: Bool) throws -> TLSConfiguration {
        let key = try NIOSSLPrivateKey(bytes: Array(privateKey.derRepresentation), format: .der)
        var configuration = server
            ? TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(try certificate.nioCertificate)], privateKey: .privateKey(key))
            : TLSConfiguration.makeClientConfiguration()
        if !server {
            configuration.certificateChain = [.certificate(try certificate.nioCertificate)]
            configuration.privateKey = .privateKey(key)
        }
        configuration.minimumTLSVersion = .tlsv13
        configuration.trustRoots = Self.noTrustRoots
        return configuration
    }
}

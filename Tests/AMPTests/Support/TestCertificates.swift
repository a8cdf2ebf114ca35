import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import X509

/// Real X.509 certificates made for a test: a CA and leaves it signs, or a self-signed one.
struct TestIdentity {
    let key: P256.Signing.PrivateKey
    let certificate: Certificate

    var nioCertificate: NIOSSLCertificate {
        var serializer = DER.Serializer()
        try! serializer.serialize(certificate)
        return try! NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
    }

    var nioKey: NIOSSLPrivateKey {
        try! NIOSSLPrivateKey(bytes: Array(key.pemRepresentation.utf8), format: .pem)
    }

    /// A certificate authority.
    static func authority(_ name: String) throws -> TestIdentity {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(3600),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(key))
        return TestIdentity(key: key, certificate: certificate)
    }

    /// A leaf named `name`, signed by this authority.
    func issue(_ name: String) throws -> TestIdentity {
        let key = P256.Signing.PrivateKey()
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(3600),
            issuer: self.certificate.subject, subject: try DistinguishedName { CommonName(name) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                SubjectAlternativeNames([.dnsName(name)])
            },
            issuerPrivateKey: .init(self.key))
        return TestIdentity(key: key, certificate: certificate)
    }

    /// TLS that presents this identity and requires the peer to chain to `trusting`
    /// (no verification at all when `trusting` is empty, as Twisted does without authorities).
    func tls(server: Bool, trusting: [NIOSSLCertificate]) -> TLSConfiguration {
        var configuration = server
            ? TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(nioCertificate)], privateKey: .privateKey(nioKey))
            : TLSConfiguration.makeClientConfiguration()
        if !server {
            configuration.certificateChain = [.certificate(nioCertificate)]
            configuration.privateKey = .privateKey(nioKey)
        }
        if trusting.isEmpty {
            configuration.certificateVerification = .none
            configuration.trustRoots = .certificates([])  // never the system's store
        } else {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(trusting)
        }
        return configuration
    }
}

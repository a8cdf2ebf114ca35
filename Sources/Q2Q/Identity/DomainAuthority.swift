import Crypto
import Foundation
import SwiftASN1
import X509

/// A domain's certificate authority: the self-signed CA certificate that names the
/// domain, and its key. The presence server also uses it as its own TLS identity, so
/// that a client who pinned the CA verifies the server with nothing else.
public struct DomainAuthority: Sendable {
    public let domain: String
    public let privateKey: P256.Signing.PrivateKey
    public let certificate: Q2QCertificate

    public init(domain: String, privateKey: P256.Signing.PrivateKey, certificate: Q2QCertificate) {
        self.domain = domain
        self.privateKey = privateKey
        self.certificate = certificate
    }

    /// A new CA for `domain`, valid from an hour ago (clock skew) for `validity`.
    public static func create(domain: String, now: Date = Date(), validity: TimeInterval = 5 * 365 * 86_400) throws -> DomainAuthority {
        let address = try Q2QAddress(resource: nil, domain: domain)
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(address.domain) }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now - 3600,
            notValidAfter: now + validity,
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                // digitalSignature too: the CA is also the server's TLS certificate.
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectAlternativeNames([.uniformResourceIdentifier(Q2QCertificate.uriScheme + address.description)])
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key)
        )
        return DomainAuthority(domain: address.domain, privateKey: key, certificate: try Q2QCertificate(certificate))
    }

    /// Checks a request as the original's `sign` did (subject exactly one CN naming one
    /// user of this domain) and that it is signed by the key it carries. Returns the
    /// address it asks for.
    public func check(_ request: Q2QCertificateRequest) throws(Q2QIdentityError) -> Q2QAddress {
        let csr = request.request
        guard csr.subject.isOnlyCommonName, let name = csr.subject.commonName else {
            throw .badRequest("the subject must be exactly one common name, user@\(domain)")
        }
        let address: Q2QAddress
        do {
            address = try Q2QAddress(name)
        } catch {
            throw .badRequest("'\(name)' is not a Q2Q address: \(error)")
        }
        guard !address.resource.isEmpty, address.domain == domain else {
            throw .badRequest("'\(name)' is not an address of \(domain)")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw .badRequest("the request's signature does not match its key")
        }
        return address
    }

    /// Signs a certificate for `address` with the request's key: CN and SAN name the
    /// address, a random serial, valid from an hour ago (clock skew) until `validity`
    /// from now; usable as TLS client and server (peers play both roles).
    public func issue(for request: Q2QCertificateRequest, validity: TimeInterval, now: Date = Date()) throws -> Q2QCertificate {
        let address = try check(request)
        return try issue(address: address, publicKey: request.request.publicKey, validity: validity, now: now)
    }

    func issue(address: Q2QAddress, publicKey: Certificate.PublicKey, validity: TimeInterval, now: Date) throws -> Q2QCertificate {
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now - 3600,
            notValidAfter: now + validity,
            issuer: self.certificate.certificate.subject,
            subject: try DistinguishedName { CommonName(address.description) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames([.uniformResourceIdentifier(Q2QCertificate.uriScheme + address.description)])
                AuthorityKeyIdentifier(keyIdentifier: try self.certificate.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: .init(privateKey)
        )
        return try Q2QCertificate(certificate)
    }

    /// Why `address` cannot be given a certificate, if it cannot: the `q2q:` name goes
    /// in a URI, which X.509 holds as IA5 (ASCII) text (review L7: such accounts could
    /// be made but never signed).
    public static func problem(naming address: Q2QAddress) -> String? {
        guard address.description.unicodeScalars.allSatisfy({ $0.isASCII && $0.value >= 0x21 && $0.value != 0x7F }) else {
            return "\(address) has characters a certificate cannot hold: user names and domains are ASCII"
        }
        return nil
    }
}

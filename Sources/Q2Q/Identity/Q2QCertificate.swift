import AMP
import Crypto
import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// An X.509 certificate as Q2Q carries it: AMP type `Cert`, the certificate's DER bytes
/// (what Twisted's `Certificate.dump()` writes by default).
public struct Q2QCertificate: Hashable, Sendable {
    public let certificate: Certificate
    /// The DER encoding, kept as received so that fingerprints and pins are exact.
    public let der: [UInt8]

    public init(_ certificate: Certificate) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        self.certificate = certificate
        self.der = serializer.serializedBytes
    }

    public init(derEncoded der: [UInt8]) throws(Q2QIdentityError) {
        do {
            self.certificate = try Certificate(derEncoded: der)
        } catch {
            throw .malformed("not a DER X.509 certificate (\(error))")
        }
        self.der = der
    }

    public init(pemEncoded pem: String) throws(Q2QIdentityError) {
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: pem)
        } catch {
            throw .malformed("not a PEM X.509 certificate (\(error))")
        }
        do {
            try self.init(certificate)
        } catch {
            throw .malformed("cannot encode certificate (\(error))")
        }
    }

    public init(_ certificate: NIOSSLCertificate) throws(Q2QIdentityError) {
        let der: [UInt8]
        do {
            der = try certificate.toDERBytes()
        } catch {
            throw .malformed("cannot read the TLS certificate (\(error))")
        }
        try self.init(derEncoded: der)
    }

    /// SHA-256 of the DER bytes, as `SHA256:AB:CD:…` (the form `openssl x509
    /// -fingerprint -sha256` prints after its `=`).
    public var fingerprint: String {
        Self.fingerprint(of: der)
    }

    static func fingerprint(of der: [UInt8]) -> String {
        "SHA256:" + SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// The serial number in lowercase hex, as stored in revocation lists.
    public var serial: String {
        Self.serial(of: certificate)
    }

    /// A certificate's serial number in lowercase hex.
    static func serial(of certificate: Certificate) -> String {
        certificate.serialNumber.bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// The Q2Q address the certificate names in its SAN (`q2q:` URI), if any.
    public var address: Q2QAddress? {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return nil }
        for name in names {
            if case .uniformResourceIdentifier(let uri) = name, uri.hasPrefix(Q2QCertificate.uriScheme),
               let address = try? Q2QAddress(String(uri.dropFirst(Q2QCertificate.uriScheme.count))) {
                return address
            }
        }
        return nil
    }

    /// The subject's common name.
    public var commonName: String? {
        certificate.subject.commonName
    }

    public var notValidAfter: Date { certificate.notValidAfter }
    public var notValidBefore: Date { certificate.notValidBefore }

    public var pem: String {
        get throws { try certificate.serializeAsPEM().pemString }
    }

    public var nioCertificate: NIOSSLCertificate {
        get throws { try NIOSSLCertificate(bytes: der, format: .der) }
    }

    /// How a Q2Q address is written in a certificate's SAN: `q2q:alice@example.com`
    /// (for a domain: `q2q:example.com`).
    public static let uriScheme = "q2q:"

    public static func == (lhs: Q2QCertificate, rhs: Q2QCertificate) -> Bool { lhs.der == rhs.der }
    public func hash(into hasher: inout Hasher) { hasher.combine(der) }
}

extension DistinguishedName {
    /// The first common name, if any.
    var commonName: String? {
        for rdn in self {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                if let text = String(attribute.value) { return text }
            }
        }
        return nil
    }

    /// Whether the name is exactly one common name, as Q2Q requires of requests.
    var isOnlyCommonName: Bool {
        Array(self).count == 1 && Array(self)[0].count == 1 && commonName != nil
    }
}

extension Q2QCertificate: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeBytes(der)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Q2QCertificate {
        do {
            return try Q2QCertificate(derEncoded: Array(buffer.readableBytesView))
        } catch {
            throw AMPArgumentError(type: "Cert", message: error.description)
        }
    }
}

extension Q2QCertificate: Codable {
    /// Outside AMP (JSON), a certificate is its PEM text.
    public init(from decoder: any Decoder) throws {
        let pem = try decoder.singleValueContainer().decode(String.self)
        try self.init(pemEncoded: pem)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(try pem)
    }
}

/// Something wrong with a key, certificate or request.
public enum Q2QIdentityError: Error, Sendable, Hashable, CustomStringConvertible {
    case malformed(String)
    case badRequest(String)

    public var description: String {
        switch self {
        case .malformed(let why): return why
        case .badRequest(let why): return "bad certificate request: \(why)"
        }
    }
}

import AMP
import Foundation
import Crypto
import NIOCore
import SwiftASN1
import X509

/// A PKCS#10 certificate request as Q2Q carries it: AMP type `CertReq`, DER bytes.
public struct Q2QCertificateRequest: Hashable, Sendable {
    public let request: CertificateSigningRequest
    public let der: [UInt8]

    /// A request for `address` signed by `key`: subject `CN=<address>` only, as the
    /// original's `sign` requires.
    public init(address: Q2QAddress, key: P256.Signing.PrivateKey) throws {
        let request = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName { CommonName(address.description) },
            privateKey: Certificate.PrivateKey(key),
            attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256
        )
        var serializer = DER.Serializer()
        try serializer.serialize(request)
        self.request = request
        self.der = serializer.serializedBytes
    }

    public init(derEncoded der: [UInt8]) throws(Q2QIdentityError) {
        do {
            self.request = try CertificateSigningRequest(derEncoded: der)
        } catch {
            throw .malformed("not a DER PKCS#10 certificate request (\(error))")
        }
        self.der = der
    }

    public static func == (lhs: Q2QCertificateRequest, rhs: Q2QCertificateRequest) -> Bool { lhs.der == rhs.der }
    public func hash(into hasher: inout Hasher) { hasher.combine(der) }
}

extension Q2QCertificateRequest: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeBytes(der)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Q2QCertificateRequest {
        do {
            return try Q2QCertificateRequest(derEncoded: Array(buffer.readableBytesView))
        } catch {
            throw AMPArgumentError(type: "CertReq", message: error.description)
        }
    }
}

extension Q2QCertificateRequest: Codable {
    /// Outside AMP (JSON), a request is its DER bytes in base64.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let bytes = Data(base64Encoded: text) else {
            throw Q2QIdentityError.malformed("certificate request is not base64")
        }
        try self.init(derEncoded: Array(bytes))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Data(der).base64EncodedString())
    }
}

import Crypto
import Foundation
import Q2Q
import Testing
import SwiftASN1
import X509

@Suite("Certificates: issuance and verification")
struct IdentityTests {
    static let alice = try! Q2QAddress("alice@example.test")

    static func issue(_ address: Q2QAddress, by authority: DomainAuthority, validity: TimeInterval = 86_400,
                      now: Date = Date()) throws -> (P256.Signing.PrivateKey, Q2QCertificate) {
        let key = P256.Signing.PrivateKey()
        let request = try Q2QCertificateRequest(address: address, key: key)
        return (key, try authority.issue(for: request, validity: validity, now: now))
    }

    @Test("a domain CA is self-signed, names its domain, and is a CA")
    func authority() throws {
        let authority = try DomainAuthority.create(domain: "Example.TEST")
        let certificate = authority.certificate
        #expect(authority.domain == "example.test")
        #expect(certificate.commonName == "example.test")
        #expect(certificate.address == (try Q2QAddress("example.test")))
        #expect(certificate.certificate.issuer == certificate.certificate.subject)
        #expect(try certificate.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        // Round trip through the AMP encoding (DER) is exact.
        let decoded = try Q2QCertificate.decodeAMPArgument(from: try certificate.ampEncoded())
        #expect(decoded == certificate)
        #expect(decoded.fingerprint == certificate.fingerprint)
        #expect(certificate.fingerprint.hasPrefix("SHA256:") && certificate.fingerprint.count == 7 + 32 * 3 - 1)
    }

    @Test("a user certificate names the address in CN and SAN, expires, and verifies against its CA")
    func goodCertificate() async throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let now = Date()
        let (_, certificate) = try Self.issue(Self.alice, by: authority, validity: 30 * 86_400, now: now)
        #expect(certificate.commonName == "alice@example.test")
        #expect(certificate.address == Self.alice)
        #expect(abs(certificate.notValidAfter.timeIntervalSince(now + 30 * 86_400)) < 2)
        #expect(try certificate.certificate.extensions.basicConstraints == .notCertificateAuthority)
        try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate).verify([certificate.certificate])
    }

    @Test("serials are random: two certificates for one user differ")
    func serials() throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let (_, first) = try Self.issue(Self.alice, by: authority)
        let (_, second) = try Self.issue(Self.alice, by: authority)
        #expect(first.serial != second.serial)
        #expect(first.serial.count >= 32)
    }

    @Test("a certificate from another CA is refused")
    func wrongAuthority() async throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let impostor = try DomainAuthority.create(domain: "example.test")
        let (_, certificate) = try Self.issue(Self.alice, by: impostor)
        await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate).verify([certificate.certificate])
        }
    }

    @Test("a certificate for another name is refused, even from the right CA")
    func wrongName() async throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let (_, certificate) = try Self.issue(try Q2QAddress("mallory@example.test"), by: authority)
        let error = await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate).verify([certificate.certificate])
        }
        #expect(error?.reason.contains("does not name alice@example.test") == true)
        // Resource names are case-sensitive: Alice is not alice.
        await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: try Q2QAddress("Alice@example.test"), authority: authority.certificate)
                .verify([certificate.certificate])
        }
    }

    @Test("an expired certificate is refused, and one not yet valid")
    func expired() async throws {
        let authority = try DomainAuthority.create(domain: "example.test", now: Date() - 100 * 86_400)
        let (_, old) = try Self.issue(Self.alice, by: authority, validity: 30 * 86_400, now: Date() - 40 * 86_400)
        await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate).verify([old.certificate])
        }
        let (_, future) = try Self.issue(Self.alice, by: authority, validity: 30 * 86_400, now: Date() + 2 * 86_400)
        await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate).verify([future.certificate])
        }
        // The same certificate verifies at a time inside its validity.
        try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate,
                                  now: { Date() - 35 * 86_400 }).verify([old.certificate])
    }

    @Test("a revoked certificate is refused")
    func revoked() async throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let (_, certificate) = try Self.issue(Self.alice, by: authority)
        let serial = certificate.serial
        let error = await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: Self.alice, authority: authority.certificate,
                                      isRevoked: { $0 == serial }).verify([certificate.certificate])
        }
        #expect(error?.reason.contains("revoked") == true)
    }

    @Test("a user certificate cannot act as a CA for another user")
    func userIsNotCA() async throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let (aliceKey, aliceCertificate) = try Self.issue(Self.alice, by: authority)
        // Alice signs a certificate for bob with her own key, naming herself as issuer.
        let bob = try Q2QAddress("bob@example.test")
        let bobKey = P256.Signing.PrivateKey()
        let forged = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(bobKey.publicKey),
            notValidBefore: Date() - 60, notValidAfter: Date() + 3600,
            issuer: aliceCertificate.certificate.subject,
            subject: try DistinguishedName { CommonName(bob.description) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                SubjectAlternativeNames([.uniformResourceIdentifier("q2q:bob@example.test")])
            },
            issuerPrivateKey: .init(aliceKey))
        await #expect(throws: Q2QVerificationError.self) {
            try await Q2QPeerVerifier(expected: bob, authority: authority.certificate)
                .verify([forged, aliceCertificate.certificate])
        }
    }

    @Test("requests the original's sign would refuse are refused", arguments: [
        "bob@other.test", "example.test",
    ])
    func badRequests(name: String) throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let request = try Q2QCertificateRequest(address: try Q2QAddress(name), key: P256.Signing.PrivateKey())
        #expect(throws: Q2QIdentityError.self) { try authority.check(request) }
    }

    @Test("a request with more than a common name is refused")
    func extraSubjectFields() throws {
        let authority = try DomainAuthority.create(domain: "example.test")
        let key = P256.Signing.PrivateKey()
        let csr = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName {
                CommonName("alice@example.test")
                OrganizationName("Evil")
            },
            privateKey: .init(key), attributes: .init(), signatureAlgorithm: .ecdsaWithSHA256)
        let serializer = SwiftASN1DER()
        let request = try Q2QCertificateRequest(derEncoded: try serializer.serialize(csr))
        #expect(throws: Q2QIdentityError.self) { try authority.check(request) }
    }

    @Test("garbage is not a certificate or a request")
    func garbage() {
        #expect(throws: Q2QIdentityError.self) { try Q2QCertificate(derEncoded: [0x30, 0x03, 0x01, 0x02]) }
        #expect(throws: Q2QIdentityError.self) { try Q2QCertificateRequest(derEncoded: Array("hello".utf8)) }
    }

    @Test("passwords: scrypt hashes match only their password and survive their text form")
    func passwords() throws {
        let hash = try PasswordHash(hashing: Array("correct horse".utf8), logN: 10)
        #expect(hash.matches(Array("correct horse".utf8)))
        #expect(!hash.matches(Array("correct horsE".utf8)))
        let parsed = try #require(PasswordHash(hash.description))
        #expect(parsed == hash)
        #expect(parsed.matches(Array("correct horse".utf8)))
        #expect(hash.description.hasPrefix("scrypt$10$8$1$"))
        // Same password, new salt: a different hash.
        #expect(try PasswordHash(hashing: Array("correct horse".utf8), logN: 10) != hash)
        for bad in ["", "scrypt$14$8$1$$", "bcrypt$1$2$3$4$5", "scrypt$99$8$1$AAAA$AAAA"] {
            #expect(PasswordHash(bad) == nil)
        }
    }
}

/// DER-serialises a CSR (swift-asn1's serializer, wrapped for brevity).
struct SwiftASN1DER {
    func serialize(_ csr: CertificateSigningRequest) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(csr)
        return serializer.serializedBytes
    }
}

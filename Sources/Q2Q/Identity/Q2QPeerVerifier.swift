import AMP
import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
@_spi(FixedExpiryValidationTime) import X509

/// Why a peer's certificate was refused.
public struct Q2QVerificationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Checks that a TLS peer is who it claims: its certificate chains to the CA of the
/// claimed address's domain (the pinned one), is valid now, is not revoked, and names
/// exactly that address in its SAN (`q2q:` URI) and common name. The original compared
/// common names only (weaknesses.md #5, #7); here every rule is a swift-certificates
/// policy.
public struct Q2QPeerVerifier: Sendable {
    /// The address the peer must be.
    public var expected: Q2QAddress
    /// The CA of `expected.domain`.
    public var authority: Q2QCertificate
    /// Answers whether a serial (lowercase hex) is revoked.
    public var isRevoked: @Sendable (String) async -> Bool
    /// The clock; tests move it.
    public var now: @Sendable () -> Date

    public init(expected: Q2QAddress, authority: Q2QCertificate,
                isRevoked: @escaping @Sendable (String) async -> Bool = { _ in false },
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.expected = expected
        self.authority = authority
        self.isRevoked = isRevoked
        self.now = now
    }

    /// Verifies a chain as presented (leaf first).
    public func verify(_ presented: [Certificate]) async throws(Q2QVerificationError) {
        guard let leaf = presented.first else { throw Q2QVerificationError("the peer presented no certificate") }
        var verifier = Verifier(rootCertificates: CertificateStore([authority.certificate])) {
            RFC5280Policy(fixedExpiryValidationTime: now())
            Q2QNamePolicy(expected: expected)
            RevocationPolicy(isRevoked: isRevoked)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(presented.dropFirst()))
        switch result {
        case .validCertificate:
            return
        case .couldNotValidate(let failures):
            if let failure = failures.first {
                throw Q2QVerificationError("\(expected)'s certificate refused: \(failure.policyFailureReason)")
            }
            throw Q2QVerificationError("\(expected)'s certificate does not chain to the CA of \(expected.domain) (\(authority.fingerprint))")
        }
    }

    /// The same check as NIOSSL's custom verification callback.
    public var tlsVerification: AMPTLSVerification {
        let verifier = self
        return Self.tlsVerification { certificates in try await verifier.verify(certificates) }
    }

    /// For a side that does not know in advance who connects (a listener's direct
    /// port): the peer is whoever its leaf certificate names (`q2q:` SAN), verified
    /// against the CA of that address's domain as `authority` finds it.
    public static func verifyingClaimedAddress(
        authority: @escaping @Sendable (String) async -> Q2QCertificate?,
        isRevoked: @escaping @Sendable (String) async -> Bool = { _ in false }
    ) -> AMPTLSVerification {
        Self.tlsVerification { certificates in
            guard let leaf = certificates.first, let claimed = try? Q2QCertificate(leaf).address, !claimed.isAnonymous else {
                throw Q2QVerificationError("the peer's certificate names no Q2Q address")
            }
            guard let domainAuthority = await authority(claimed.domain) else {
                throw Q2QVerificationError("the CA of \(claimed.domain) is not known here")
            }
            try await Q2QPeerVerifier(expected: claimed, authority: domainAuthority, isRevoked: isRevoked).verify(certificates)
        }
    }

    private static func tlsVerification(_ check: @escaping @Sendable ([Certificate]) async throws -> Void) -> AMPTLSVerification {
        { presented, promise in
            let certificates: [Certificate]
            do {
                certificates = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) }
            } catch {
                promise.succeed(.failed)
                return
            }
            promise.completeWithTask {
                do {
                    try await check(certificates)
                    return .certificateVerified
                } catch {
                    return .failed
                }
            }
        }
    }
}

/// The leaf names exactly the expected address: a `q2q:` URI SAN equal to it, and a
/// common name equal to it (domains name themselves).
struct Q2QNamePolicy: VerifierPolicy {
    let expected: Q2QAddress
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = []

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        let leaf = chain.leaf
        let names = (try? leaf.extensions.subjectAlternativeNames).flatMap { $0 }.map(Array.init) ?? []
        let uris = names.compactMap { name -> String? in
            if case .uniformResourceIdentifier(let uri) = name { return uri }
            return nil
        }
        let wanted = Q2QCertificate.uriScheme + expected.description
        guard uris.contains(wanted) else {
            return .failsToMeetPolicy(reason: .init("it does not name \(expected) (its q2q names: \(uris.isEmpty ? "none" : uris.joined(separator: ", ")))"))
        }
        guard leaf.subject.commonName == expected.description else {
            return .failsToMeetPolicy(reason: .init("its common name \(leaf.subject.commonName ?? "(none)") is not \(expected)"))
        }
        return .meetsPolicy
    }
}

/// No certificate in the chain is on the domain's revocation list.
struct RevocationPolicy: VerifierPolicy {
    let isRevoked: @Sendable (String) async -> Bool
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = []

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        for certificate in chain {
            let serial = Q2QCertificate.serial(of: certificate)
            if await isRevoked(serial) {
                return .failsToMeetPolicy(reason: .init("certificate \(serial) was revoked"))
            }
        }
        return .meetsPolicy
    }
}

import Crypto
import Foundation

/// A presence server's proof that an address-discovery answer reached the address it
/// names: listeners send seeds and connect-backs to a caller's UDP address, so the
/// server hands that address on only when the caller shows it really receives there.
/// The caller's presence connection proves one address by itself (its source); the
/// proof covers the others, above all the other address family (a dual-stack node
/// reaches its server over one family, and punches over both).
///
/// 8 bytes: the minute it was made (mod 256), then the first 7 bytes of an HMAC-SHA256,
/// keyed with a secret of this server process, over that minute and the address. It is
/// good for ``lifetime``; one who never received the answer cannot make it.
struct AddressProofs: Sendable {
    static let size = 8
    /// Minutes a proof stays good (its minute and the ones before): longer than a node
    /// keeps a discovered mapping (``NodeUDP/mappingLifetime``).
    static let lifetime = 3

    private let key: SymmetricKey

    init(key: SymmetricKey = SymmetricKey(size: .bits256)) {
        self.key = key
    }

    func proof(for address: HostPort, now: Date = Date()) -> [UInt8] {
        let minute = Self.minute(of: now)
        return [UInt8(truncatingIfNeeded: minute)] + mac(address, minute: minute)
    }

    /// Whether `proof` was made here for `address` within ``lifetime`` minutes.
    func verifies(_ proof: [UInt8], for address: HostPort, now: Date = Date()) -> Bool {
        guard proof.count == Self.size else { return false }
        let current = Self.minute(of: now)
        for minute in (current - Int64(Self.lifetime) + 1)...current where UInt8(truncatingIfNeeded: minute) == proof[0] {
            // Compared in constant time: a mismatch tells nothing of where it differs.
            let expected = mac(address, minute: minute)
            var difference: UInt8 = 0
            for (a, b) in zip(expected, proof.dropFirst()) { difference |= a ^ b }
            if difference == 0 { return true }
        }
        return false
    }

    private func mac(_ address: HostPort, minute: Int64) -> [UInt8] {
        var message = withUnsafeBytes(of: minute.bigEndian) { Array($0) }
        message += Array(address.description.utf8)
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: key).prefix(Self.size - 1))
    }

    private static func minute(of date: Date) -> Int64 { Int64((date.timeIntervalSince1970 / 60).rounded(.down)) }
}

import _CryptoExtras
import Crypto
import Foundation

/// A password stored as an scrypt hash, in the text form
/// `scrypt$<log2 N>$<r>$<p>$<salt, base64>$<key, base64>` so that the cost can grow
/// later without breaking stored hashes.
public struct PasswordHash: Sendable, Hashable, CustomStringConvertible {
    public let logN: Int
    public let blockSize: Int
    public let parallelism: Int
    public let salt: [UInt8]
    public let key: [UInt8]

    /// The cost used for new hashes: N = 2^14, r = 8, p = 1 (about 16 MiB and tens of
    /// milliseconds — the interactive-login parameters of the scrypt paper).
    public static let defaultLogN = 14

    public init(hashing password: some DataProtocol, logN: Int = PasswordHash.defaultLogN) throws {
        let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max) }
        try self.init(password: password, logN: logN, blockSize: 8, parallelism: 1, salt: salt)
    }

    private init(password: some DataProtocol, logN: Int, blockSize: Int, parallelism: Int, salt: [UInt8]) throws {
        self.logN = logN
        self.blockSize = blockSize
        self.parallelism = parallelism
        self.salt = salt
        self.key = try Self.derive(password, logN: logN, blockSize: blockSize, parallelism: parallelism, salt: salt)
    }

    private static func derive(_ password: some DataProtocol, logN: Int, blockSize: Int, parallelism: Int, salt: [UInt8]) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(from: password, salt: salt, outputByteCount: 32,
                                           rounds: 1 << logN, blockSize: blockSize, parallelism: parallelism)
        return key.withUnsafeBytes { Array($0) }
    }

    /// Parses the stored text form.
    public init?(_ text: String) {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "scrypt",
              let logN = Int(parts[1]), (10...20).contains(logN),
              let r = Int(parts[2]), (1...32).contains(r),
              let p = Int(parts[3]), (1...16).contains(p),
              let salt = Data(base64Encoded: String(parts[4])), !salt.isEmpty,
              let key = Data(base64Encoded: String(parts[5])), key.count == 32 else { return nil }
        self.logN = logN
        self.blockSize = r
        self.parallelism = p
        self.salt = Array(salt)
        self.key = Array(key)
    }

    public var description: String {
        "scrypt$\(logN)$\(blockSize)$\(parallelism)$\(Data(salt).base64EncodedString())$\(Data(key).base64EncodedString())"
    }

    /// Whether `password` is the one hashed, compared in constant time.
    public func matches(_ password: some DataProtocol) -> Bool {
        guard let candidate = try? Self.derive(password, logN: logN, blockSize: blockSize, parallelism: parallelism, salt: salt),
              candidate.count == key.count else { return false }
        return zip(candidate, key).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Spends the same work as a real check, so that an unknown user answers no faster
    /// than a wrong password.
    static func burnEquivalentWork(_ password: some DataProtocol) {
        _ = try? derive(password, logN: defaultLogN, blockSize: 8, parallelism: 1, salt: Array(repeating: 0, count: 16))
    }
}

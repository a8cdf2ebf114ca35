import Crypto
import Foundation

enum FileDigest {
    /// SHA-256 of the first `length` bytes of a file (all of it when `nil`), lowercase hex.
    static func sha256(of url: URL, length: Int64? = nil) throws -> String {
        hex(try hasher(of: url, length: length).finalize())
    }

    /// A SHA-256 that has taken in the first `length` bytes of a file (all when `nil`),
    /// ready to take more.
    static func hasher(of url: URL, length: Int64? = nil) throws -> SHA256 {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        var remaining = length ?? Int64.max
        while remaining > 0 {
            let chunk = try handle.read(upToCount: Int(min(remaining, 1 << 20))) ?? Data()
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            remaining -= Int64(chunk.count)
        }
        return hasher
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}

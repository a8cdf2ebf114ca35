import Crypto
import Foundation

enum FileDigest {
    /// SHA-256 of the first `length` bytes of a file (all of it when `nil`), lowercase hex.
    static func sha256(of url: URL, length: Int64? = nil) throws -> String {
        hex(try hasher(of: url, length: length).finalize())
    }

    /// A SHA-256 that has taken in the first `length` bytes of a file (all when `nil`),
    /// ready to take more.
    ///
    /// Reads 64 KiB at a time into one buffer: each piece is still in the CPU's cache
    /// when the hash reads it. (1 MiB reads into a new `Data` each ran at about 760 MB/s
    /// on the test machine, the hash alone at 1.8 GB/s.)
    static func hasher(of url: URL, length: Int64? = nil) throws -> SHA256 {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        let descriptor = handle.fileDescriptor
        var hasher = SHA256()
        var remaining = length ?? Int64.max
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 64)
        defer { piece.deallocate() }
        while remaining > 0 {
            let got = try readFile(descriptor, into: piece.baseAddress!, upTo: Int(min(remaining, Int64(piece.count))))
            if got == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: piece[..<got]))
            remaining -= Int64(got)
        }
        return hasher
    }

    /// `read(2)` from a file's current position, again when interrupted by a signal;
    /// 0 at the end of the file. A failure is described on one line (`strerror`).
    static func readFile(_ descriptor: Int32, into memory: UnsafeMutableRawPointer, upTo count: Int) throws -> Int {
        while true {
            let got = read(descriptor, memory, count)
            if got >= 0 { return got }
            if errno != EINTR { throw FileTransferError(String(cString: strerror(errno))) }
        }
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}

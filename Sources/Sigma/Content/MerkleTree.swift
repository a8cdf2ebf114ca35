import Crypto

/// BitTorrent v2's hash tree (BEP 52), the one that names a file: SHA-256 of every
/// 16 KiB block (the last may be shorter) as leaves, a binary tree of SHA-256 over pairs
/// of nodes, padded to a power of two with leaves of 32 zero bytes. Its root is what
/// BEP 52 calls the file's `pieces root`.
public enum MerkleTree {
    /// The leaf block size, fixed by BEP 52.
    public static let blockSize = 16 * 1024
    public typealias Hash = [UInt8]

    /// SHA-256 of one block.
    public static func leaf(_ block: UnsafeRawBufferPointer) -> Hash {
        var hasher = SHA256()
        hasher.update(bufferPointer: block)
        return Array(hasher.finalize())
    }

    static func parent(_ left: Hash, _ right: Hash) -> Hash {
        var hasher = SHA256()
        hasher.update(data: left)
        hasher.update(data: right)
        return Array(hasher.finalize())
    }

    /// The root of a subtree of 2^`height` zero leaves (the pad at that height).
    public static func pad(height: Int) -> Hash {
        var hash = Hash(repeating: 0, count: 32)
        for _ in 0..<height { hash = parent(hash, hash) }
        return hash
    }

    /// The root over `nodes` at `height` (0 = leaves), padded with that height's pad to
    /// at least `width` nodes, rounded up to a power of two. One node with `width` 1 is
    /// its own root.
    public static func root(of nodes: [Hash], height: Int = 0, width: Int = 1) -> Hash {
        precondition(!nodes.isEmpty, "a tree has at least one node")
        var level = nodes
        var padding = pad(height: height)
        let target = nextPowerOfTwo(max(width, nodes.count))
        var size = target
        while size > 1 {
            var next: [Hash] = []
            next.reserveCapacity(size / 2)
            var index = 0
            while index < size {
                let left = index < level.count ? level[index] : padding
                let right = index + 1 < level.count ? level[index + 1] : padding
                // Past the real nodes, a pair of pads is the next height's pad.
                if index >= level.count { break }
                next.append(parent(left, right))
                index += 2
            }
            padding = parent(padding, padding)
            level = next
            size /= 2
        }
        return level[0]
    }

    /// Hashes packed one after another (a piece layer on the wire or on disk), split;
    /// nil unless the bytes are whole hashes.
    public static func hashes(packed bytes: some Collection<UInt8>) -> [Hash]? {
        guard bytes.count % 32 == 0 else { return nil }
        let all = Array(bytes)
        return stride(from: 0, to: all.count, by: 32).map { Array(all[$0..<$0 + 32]) }
    }

    /// The smallest power of two at least `n` (1 for 0 and 1).
    public static func nextPowerOfTwo(_ n: Int) -> Int {
        n <= 1 ? 1 : 1 << (Int.bitWidth - (n - 1).leadingZeroBitCount)
    }

    /// log2 of a power of two.
    static func log2(_ powerOfTwo: Int) -> Int { powerOfTwo.trailingZeroBitCount }
}

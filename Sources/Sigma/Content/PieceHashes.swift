/// Checking pieces against a file's root. A file of several pieces has a piece layer
/// (BEP 52's: the hash of each piece's subtree); it is fetched from any holder and
/// accepted only if it hashes up to the root. A single-piece file is checked against
/// its root directly.
public enum PieceHashes {
    /// The subtree hash of a piece's bytes: its 16 KiB leaves, padded with zero leaves
    /// to `leavesPerPiece` (the last piece of a file is usually short).
    public static func pieceHash(_ bytes: UnsafeRawBufferPointer, leavesPerPiece: Int) -> MerkleTree.Hash {
        MerkleTree.root(of: leaves(bytes), width: leavesPerPiece)
    }

    /// The root of a file that fits in one piece, from its bytes.
    public static func singlePieceRoot(_ bytes: UnsafeRawBufferPointer) -> MerkleTree.Hash {
        MerkleTree.root(of: leaves(bytes))
    }

    static func leaves(_ bytes: UnsafeRawBufferPointer) -> [MerkleTree.Hash] {
        guard !bytes.isEmpty else { return [MerkleTree.leaf(UnsafeRawBufferPointer(start: nil, count: 0))] }
        var leaves: [MerkleTree.Hash] = []
        leaves.reserveCapacity((bytes.count + MerkleTree.blockSize - 1) / MerkleTree.blockSize)
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + MerkleTree.blockSize, bytes.count)
            leaves.append(MerkleTree.leaf(UnsafeRawBufferPointer(rebasing: bytes[offset..<end])))
            offset = end
        }
        return leaves
    }

    /// Whether `layer` (a hash per piece of a file) hashes up to `root`.
    public static func layerMatches(_ layer: [MerkleTree.Hash], root: MerkleTree.Hash, leavesPerPiece: Int) -> Bool {
        guard !layer.isEmpty, layer.allSatisfy({ $0.count == 32 }) else { return false }
        return MerkleTree.root(of: layer, height: MerkleTree.log2(leavesPerPiece)) == root
    }
}

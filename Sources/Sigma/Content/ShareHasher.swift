import Foundation

/// Hashes files on disk into their BEP 52 roots and piece layers.
public enum ShareHasher {
    /// One file's hashes.
    public struct FileHashes: Sendable {
        public var size: Int64
        /// nil for an empty file.
        public var root: MerkleTree.Hash?
        /// A hash per piece (for a single-piece file, its root).
        public var pieceLayer: [MerkleTree.Hash]
    }

    /// Reads `url` once and hashes it with pieces of `pieceLength` bytes.
    /// `progress` is told of the bytes hashed so far.
    public static func hash(_ url: URL, pieceLength: Int, progress: (Int64) -> Void = { _ in }) throws(ShareError) -> FileHashes {
        let handle: FileHandle
        do {
            handle = try FileHandle(forReadingFrom: url)
        } catch {
            throw .io("cannot read \(url.path): \(error.localizedDescription)")
        }
        defer { try? handle.close() }
        let leavesPerPiece = pieceLength / MerkleTree.blockSize
        // Only the first piece's leaves are kept (a file of one piece is its own root);
        // a longer file's root comes from its piece layer, not from every leaf again.
        var firstLeaves: [MerkleTree.Hash] = []
        var pieceLayer: [MerkleTree.Hash] = []
        var size: Int64 = 0
        while true {
            let chunk: Data
            do {
                chunk = try handle.read(upToCount: pieceLength) ?? Data()
            } catch {
                throw .io("cannot read \(url.path): \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            let pieceLeaves = chunk.withUnsafeBytes { PieceHashes.leaves($0) }
            if pieceLayer.isEmpty { firstLeaves = pieceLeaves }
            pieceLayer.append(MerkleTree.root(of: pieceLeaves, width: leavesPerPiece))
            size += Int64(chunk.count)
            progress(size)
            if chunk.count < pieceLength { break }
        }
        guard size > 0 else { return FileHashes(size: 0, root: nil, pieceLayer: []) }
        guard pieceLayer.count > 1 else {
            let root = MerkleTree.root(of: firstLeaves)
            return FileHashes(size: size, root: root, pieceLayer: [root])
        }
        let root = MerkleTree.root(of: pieceLayer, height: MerkleTree.log2(leavesPerPiece))
        return FileHashes(size: size, root: root, pieceLayer: pieceLayer)
    }
}

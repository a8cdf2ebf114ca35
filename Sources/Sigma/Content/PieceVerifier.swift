/// Checks a piece's bytes against the share's hash tree: a single-piece file against its
/// root, any other piece against its file's verified piece layer.
struct PieceVerifier: Sendable {
    let manifest: ShareManifest
    let layout: PieceLayout
    /// Each file's piece layer, verified against its root (a single-piece file's is its
    /// root; an empty file's is empty).
    let layers: [[MerkleTree.Hash]]

    func verify(_ piece: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        let (file, index) = layout.locate(piece)
        guard bytes.count == layout.extent(of: piece).length else { return false }
        if layout.isSinglePiece(file: file) {
            return PieceHashes.singlePieceRoot(bytes) == manifest.files[file].root
        }
        return PieceHashes.pieceHash(bytes, leavesPerPiece: layout.leavesPerPiece) == layers[file][index]
    }
}

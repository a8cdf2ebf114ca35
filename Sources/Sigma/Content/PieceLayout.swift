/// How a share is cut into pieces: the unit that is requested, verified and counted as
/// held. Every file starts a new piece (as in BEP 52), so a piece belongs to one file
/// and is checked against that file's hash tree. Pieces are numbered across the share,
/// file after file in manifest order.
public struct PieceLayout: Sendable, Hashable {
    /// Bytes per piece (a power of two, at least two 16 KiB blocks).
    public let pieceLength: Int
    /// The first piece of each file, and one past the last piece of the share.
    private let firstPiece: [Int]
    private let sizes: [Int64]

    /// Pieces are sent in `Data` bodies of at most this many bytes (AMP values hold 64 KiB).
    public static let transferBlock = 32 * 1024
    /// The smallest piece: two BEP 52 blocks, one `Data` body.
    public static let minimumPieceLength = 32 * 1024
    /// A share is cut into at most about this many pieces (bigger shares get bigger pieces),
    /// so that have-maps stay small.
    public static let targetMaximumPieces = 1 << 18

    public init(_ manifest: ShareManifest) {
        self.init(sizes: manifest.files.map(\.size))
    }

    init(sizes: [Int64]) {
        let total = sizes.reduce(0, +)
        var length = Self.minimumPieceLength
        while total / Int64(length) > Int64(Self.targetMaximumPieces) { length *= 2 }
        pieceLength = length
        self.sizes = sizes
        var first: [Int] = []
        var next = 0
        for size in sizes {
            first.append(next)
            next += Int((size + Int64(length) - 1) / Int64(length))
        }
        first.append(next)
        firstPiece = first
    }

    public var pieceCount: Int { firstPiece[firstPiece.count - 1] }

    /// Leaves (16 KiB blocks) per full piece.
    public var leavesPerPiece: Int { pieceLength / MerkleTree.blockSize }

    /// The file a piece belongs to, and its index within that file.
    public func locate(_ piece: Int) -> (file: Int, index: Int) {
        precondition(piece >= 0 && piece < pieceCount, "piece \(piece) out of range")
        // Binary search: the last file whose first piece is at most `piece`.
        var low = 0
        var high = sizes.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if firstPiece[middle] <= piece { low = middle } else { high = middle - 1 }
        }
        // Empty files share their first piece number with the next file.
        while firstPiece[low + 1] <= piece { low += 1 }
        return (low, piece - firstPiece[low])
    }

    /// The pieces of file `file`.
    public func pieces(ofFile file: Int) -> Range<Int> { firstPiece[file]..<firstPiece[file + 1] }

    /// Where piece `piece` lies in its file, and how long it is.
    public func extent(of piece: Int) -> (file: Int, offset: Int64, length: Int) {
        let (file, index) = locate(piece)
        let offset = Int64(index) * Int64(pieceLength)
        return (file, offset, Int(min(Int64(pieceLength), sizes[file] - offset)))
    }

    /// Whether file `file` fits in one piece (then its root checks the piece directly and
    /// it has no piece layer).
    public func isSinglePiece(file: Int) -> Bool { pieces(ofFile: file).count == 1 }
}

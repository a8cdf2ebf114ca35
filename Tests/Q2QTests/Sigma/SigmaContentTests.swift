import Foundation
import NIOCore
import Q2Q
@testable import Sigma
import Testing
import VertexTestSupport

@Suite("Sigma content identity")
struct SigmaContentTests {
    static let block = MerkleTree.blockSize

    @Test("file roots are libtorrent's BEP 52 pieces roots (1 B, 16 KiB - 1, 16 KiB, 16 KiB + 1, 3 MiB + 5, 5 blocks, 2 MiB)",
          arguments: [1, block - 1, block, block + 1, 3 << 20 + 5, 5 * block, 2 << 20])
    func rootsMatchLibtorrent(size: Int) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sigma-root-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("f\(size).bin")
        try Data(pseudoRandomBytes(size, seed: UInt64(size) | 1)).write(to: file)

        let layout = PieceLayout(sizes: [Int64(size)])
        let ours = try ShareHasher.hash(file, pieceLength: layout.pieceLength)
        let script = CLITests.packageRoot.appendingPathComponent("scripts/sigma/libtorrent_root.py").path
        let run = try await ChildProcess.run(ChildProcess.env, ["python3", script, file.path], timeout: .seconds(60))
        #expect(run.status == 0, "\(run.stderr)")
        #expect(hex(try #require(ours.root)) == run.stdout.trimmingCharacters(in: .whitespacesAndNewlines))

        // The piece layer hashes up to the root; a changed hash does not.
        #expect(ours.pieceLayer.count == layout.pieceCount)
        if ours.pieceLayer.count > 1 {
            #expect(PieceHashes.layerMatches(ours.pieceLayer, root: ours.root!, leavesPerPiece: layout.leavesPerPiece))
            var forged = ours.pieceLayer
            forged[forged.count - 1][0] ^= 1
            #expect(!PieceHashes.layerMatches(forged, root: ours.root!, leavesPerPiece: layout.leavesPerPiece))
        }
    }

    @Test("pieces: every file starts a piece, empty files have none, and locate/extent agree")
    func layout() {
        let length = PieceLayout.minimumPieceLength
        let layout = PieceLayout(sizes: [Int64(length) * 2 + 1, 0, 5, Int64(length)])
        #expect(layout.pieceLength == length)
        #expect(layout.pieceCount == 3 + 0 + 1 + 1)
        #expect(layout.locate(2) == (0, 2) && layout.locate(3) == (2, 0) && layout.locate(4) == (3, 0))
        #expect(layout.extent(of: 2).length == 1 && layout.extent(of: 3).length == 5 && layout.extent(of: 4).length == length)
        #expect(layout.pieces(ofFile: 1).isEmpty)
        // A large share gets larger pieces, keeping their number bounded.
        let huge = PieceLayout(sizes: [1 << 40])
        #expect(huge.pieceCount <= PieceLayout.targetMaximumPieces && huge.pieceLength > length)
    }

    @Test("manifests: canonical, named by their hash, and bad ones refused with a reason")
    func manifests() throws {
        let root = [UInt8](repeating: 7, count: 32)
        let manifest = try ShareManifest(kind: .directory, name: "photos", files: [
            .init(path: "photos/b.jpg", size: 10, root: root), .init(path: "photos/a/c.jpg", size: 0, root: nil),
        ])
        #expect(manifest.files.map(\.path) == ["photos/a/c.jpg", "photos/b.jpg"])
        let decoded = try ShareManifest.decode(manifest.encoded())
        #expect(decoded == manifest && decoded.id == manifest.id)

        func refused(_ files: [ShareManifest.File], name: String = "photos") -> Bool {
            (try? ShareManifest(kind: .directory, name: name, files: files)) == nil
        }
        #expect(refused([.init(path: "photos/../etc/passwd", size: 1, root: root)]))
        #expect(refused([.init(path: "/etc/passwd", size: 1, root: root)]))
        #expect(refused([.init(path: "photos/a", size: 1, root: root), .init(path: "photos/a", size: 2, root: root)]))
        #expect(refused([.init(path: "photos/a", size: 1, root: root), .init(path: "photos/a/b", size: 2, root: root)]))
        #expect(refused([.init(path: "other/a", size: 1, root: root)]))
        #expect(refused([.init(path: "photos/a\u{202E}gpj.exe", size: 1, root: root)]))
        #expect(refused([.init(path: "photos/a", size: 1, root: nil)]))
        #expect(refused([.init(path: "photos/./a", size: 1, root: root)]))
        #expect(refused([.init(path: "photos/a", size: 1, root: root)], name: ".."))

        // Not canonical (reordered lines) or not a manifest at all.
        var lines = String(decoding: manifest.encoded(), as: UTF8.self).split(separator: "\n")
        lines.swapAt(1, 2)
        #expect(throws: ShareError.self) { try ShareManifest.decode(Array((lines.joined(separator: "\n") + "\n").utf8)) }
        #expect(throws: ShareError.self) { try ShareManifest.decode(Array("hello\n".utf8)) }
        #expect(throws: ShareError.self) { try ShareManifest.decode([0xFF, 0x0A]) }
    }

    @Test("fuzz: random bytes and random manifest-like text are refused or parsed, never crash the decoder")
    func manifestFuzz() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<300 {
            var bytes = [UInt8](repeating: 0, count: Int(random.next() % 200))
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: random.next()) }
            // Mostly text with spaces and newlines, so the parser gets past the header.
            let text = "sigma-manifest 1 dir d\n" + String(decoding: bytes.map { $0 % 3 == 0 ? 0x20 : ($0 % 5 == 0 ? 0x0A : 0x61 + $0 % 26) }, as: UTF8.self)
            _ = try? ShareManifest.decode(Array(text.utf8))
            _ = try? ShareManifest.decode(bytes)
        }
    }
}

@Suite("Sigma have-maps and piece picking")
struct SigmaPickerTests {
    @Test("property: BitArray round-trips through its AMP encoding; random bytes are refused or decoded, never crash")
    func bitArrays() throws {
        var random = SplitMix64(seed: 7)
        for _ in 0..<500 {
            let count = Int(random.next() % 300)
            var array = BitArray(count: count)
            for index in 0..<count where random.next() % 3 == 0 { array[index] = true }
            var buffer = ByteBuffer()
            try array.encodeAMPArgument(into: &buffer)
            let decoded = try BitArray.decodeAMPArgument(from: buffer)
            #expect(decoded == array && decoded.setCount == array.setIndices.count)

            var noise = ByteBuffer()
            noise.writeString("\(random.next() % 40):")
            for _ in 0..<Int(random.next() % 8) { noise.writeInteger(UInt8(truncatingIfNeeded: random.next())) }
            if let parsed = try? BitArray.decodeAMPArgument(from: noise) {
                #expect(parsed.packed.count == (parsed.count + 7) / 8)
            }
        }
        // Pad bits set, or a length that does not match: refused.
        #expect(BitArray(count: 3, packed: [0xFF]) == nil)
        #expect(BitArray(count: 9, packed: [0xFF]) == nil)
    }

    @Test("rarest first, nothing asked twice until the endgame, then at most two holders per piece")
    func picking() throws {
        var random = SplitMix64(seed: 3)
        var picker = PiecePicker(have: BitArray(count: 8), random: &random)
        let a = try Q2QAddress("a@example.test"), b = try Q2QAddress("b@example.test"), c = try Q2QAddress("c@example.test")
        let all = BitArray(count: 8, filled: true)
        var rare = BitArray(count: 8)
        rare[5] = true
        picker.peerJoined(all)
        picker.peerJoined(all)
        picker.peerJoined(rare)
        // Piece 5 is held by three peers, the others by two: 5 comes last.
        let first = picker.pick(for: a, holding: all, count: 7)
        #expect(Set(first) == Set(0..<8).subtracting([5]))
        for piece in first { picker.requested(piece, from: a) }
        #expect(picker.pick(for: b, holding: all, count: 4) == [5])
        picker.requested(5, from: b)
        // Everything is in flight: the endgame asks another holder, once.
        let endgame = picker.pick(for: c, holding: all, count: 8)
        #expect(!endgame.isEmpty && endgame.allSatisfy { first.contains($0) || $0 == 5 })
        for piece in endgame { picker.requested(piece, from: c) }
        #expect(picker.pick(for: c, holding: all, count: 8).isEmpty, "no piece asked of more than two peers")
        let cancelled = picker.verified(endgame[0])
        #expect(Set(cancelled).count == 2 && picker.have[endgame[0]])
    }
}

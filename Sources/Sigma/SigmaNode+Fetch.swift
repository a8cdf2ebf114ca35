import AMP
import Crypto
import Foundation
import Q2Q

extension SigmaNode {
    /// Downloads the share `link` names into `directory`, from its holders and every peer
    /// they introduce: fetches the manifest (a directory share's) and the piece layers,
    /// checks each against the share's id, resumes a partial download found there
    /// (re-checking every piece it holds), then joins the swarm. `access` says who may
    /// fetch from us meanwhile (besides the holders and those they introduce).
    public func fetch(_ link: ShareLink, into directory: URL, access: ShareAccess = ShareAccess()) async throws(ShareError) -> SigmaSwarm {
        if let existing = swarms.withLock({ $0[link.id] }) { return existing }
        let manifest = try await self.manifest(for: link)
        let partial = try PartialDownload(manifest, in: directory)
        let layout = partial.layout
        var layers: [[MerkleTree.Hash]] = []
        for (index, file) in manifest.files.enumerated() {
            let count = layout.pieces(ofFile: index).count
            if count == 0 {
                layers.append([])
            } else if count == 1 {
                layers.append([file.root!])
            } else if let saved = partial.savedLayer(file: index),
                      PieceHashes.layerMatches(saved, root: file.root!, leavesPerPiece: layout.leavesPerPiece) {
                layers.append(saved)
            } else {
                let layer = try await pieceLayer(of: index, in: manifest, layout: layout, from: link.holders)
                try partial.saveLayer(layer, file: index)
                layers.append(layer)
            }
        }
        let verifier = PieceVerifier(manifest: manifest, layout: layout, layers: layers)
        let files = try partial.openFiles()
        let (have, resumed) = Self.recheck(partial.savedHave(), with: verifier, files: files)
        var admitted = access
        admitted.allowed.formUnion(link.holders)
        let swarm = SigmaSwarm(verifier: verifier, files: files, have: have, resumed: resumed, partial: partial,
                               access: admitted, context: context)
        try register(swarm)
        await swarm.start(joining: link.holders)
        return swarm
    }

    /// The pieces a resumed download holds: those its saved have-map lists that still
    /// verify on disk.
    static func recheck(_ saved: BitArray?, with verifier: PieceVerifier, files: ShareFiles) -> (BitArray, Int) {
        var have = BitArray(count: verifier.layout.pieceCount)
        guard let saved else { return (have, 0) }
        for piece in saved.setIndices {
            guard let bytes = try? files.read(piece) else { continue }
            if bytes.withUnsafeReadableBytes({ verifier.verify(piece, $0) }) { have[piece] = true }
        }
        return (have, have.setCount)
    }

    /// The share's manifest: a file share's follows from its link; a directory share's
    /// is fetched from a holder and must hash to the share's id.
    func manifest(for link: ShareLink) async throws(ShareError) -> ShareManifest {
        switch link.kind {
        case .file:
            let manifest = link.size == 0
                ? try ShareManifest(kind: .file, name: link.name, files: [.init(path: link.name, size: 0, root: nil)])
                : try ShareManifest(file: link.name, size: link.size, root: link.id.bytes)
            guard manifest.id == link.id else { throw .badLink("an empty file's link names another id") }
            return manifest
        case .directory:
            var problems: [String] = []
            for holder in link.holders {
                do {
                    let bytes = try await fetchManifest(link.id, from: holder)
                    guard ShareID(Array(SHA256.hash(data: bytes))) == link.id else {
                        throw ShareError.verification("the manifest \(holder) sent does not hash to the share's id")
                    }
                    let manifest = try ShareManifest.decode(bytes)
                    guard manifest.totalSize == link.size, manifest.name == link.name else {
                        throw ShareError.badLink("the link's name or size differ from the share's")
                    }
                    return manifest
                } catch {
                    problems.append("\(holder): \(error)")
                }
            }
            throw .io("cannot get the share's manifest (\(problems.joined(separator: "; ")))")
        }
    }

    private func fetchManifest(_ id: ShareID, from holder: Q2QAddress) async throws -> [UInt8] {
        let connection = try await context.connection(to: holder)
        var bytes: [UInt8] = []
        while true {
            let answer = try await connection.call(FetchManifest.self, .init(share: id.description, offset: bytes.count))
            guard answer.total <= ShareManifest.maximumEncodedSize, answer.total >= bytes.count + answer.chunk.count else {
                throw ShareError.badManifest("the manifest's size changed or is too large (\(answer.total) bytes)")
            }
            bytes += answer.chunk.bytes
            if bytes.count == answer.total { return bytes }
            guard answer.chunk.count > 0 else { throw ShareError.badManifest("an empty chunk before the manifest's end") }
        }
    }

    /// File `file`'s piece layer, from the first holder whose layer hashes to its root.
    private func pieceLayer(of file: Int, in manifest: ShareManifest, layout: PieceLayout,
                            from holders: [Q2QAddress]) async throws(ShareError) -> [MerkleTree.Hash] {
        let count = layout.pieces(ofFile: file).count
        var problems: [String] = []
        for holder in holders {
            do {
                let connection = try await context.connection(to: holder)
                var layer: [MerkleTree.Hash] = []
                while layer.count < count {
                    let wanted = min(FetchHashes.maximumCount, count - layer.count)
                    let answer = try await connection.call(FetchHashes.self, .init(share: manifest.id.description, file: file,
                                                                                   first: layer.count, count: wanted))
                    guard answer.hashes.count == wanted * 32, let hashes = MerkleTree.hashes(packed: answer.hashes.buffer.readableBytesView) else {
                        throw ShareError.verification("\(answer.hashes.count) bytes for \(wanted) hashes")
                    }
                    layer += hashes
                }
                guard PieceHashes.layerMatches(layer, root: manifest.files[file].root!, leavesPerPiece: layout.leavesPerPiece) else {
                    throw ShareError.verification("the piece hashes of \(manifest.files[file].path) do not hash to its root")
                }
                return layer
            } catch {
                problems.append("\(holder): \(error)")
            }
        }
        throw .io("cannot get the piece hashes of \(manifest.files[file].path) (\(problems.joined(separator: "; ")))")
    }
}

import Foundation
import VertexApps

/// A download in progress: `DIR/.NAME.ID.sigma-partial/`, a hidden directory beside
/// where the share will appear, holding
/// - `manifest`: the verified manifest (so a restart knows the share without asking);
/// - `have`: the have-map of verified pieces, replaced atomically as it grows;
/// - `layers/N`: file N's verified piece layer;
/// - `data/N`: file N's bytes, at their offsets.
/// Nothing appears under the share's name until every piece verified: then the files
/// are put in place (a directory share is assembled inside the partial directory) and
/// moved to their name in one rename that never replaces anything.
public struct PartialDownload: Sendable {
    public let directory: URL
    public let target: URL
    public let manifest: ShareManifest
    public let layout: PieceLayout

    static let suffix = ".sigma-partial"

    /// Opens or creates the partial download of `manifest` in `parent`.
    public init(_ manifest: ShareManifest, in parent: URL) throws(ShareError) {
        self.manifest = manifest
        self.layout = PieceLayout(manifest)
        target = parent.appendingPathComponent(manifest.name)
        directory = parent.appendingPathComponent(".\(manifest.name).\(manifest.id.description.prefix(16))\(Self.suffix)")
        if ReceiveDirectory.kind(of: target) != nil {
            throw .io("\(target.path) exists already; move it away to download \(manifest.name) here")
        }
        do {
            for sub in ["", "layers", "data"] {
                let url = directory.appendingPathComponent(sub)
                switch ReceiveDirectory.kind(of: url) {
                case nil: try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
                case .directory?: break
                default: throw ShareError.io("\(url.path) is in the way (not a directory)")
                }
            }
            let manifestURL = directory.appendingPathComponent("manifest")
            if let stored = try? Data(contentsOf: manifestURL), Array(stored) != manifest.encoded() {
                throw ShareError.io("\(directory.path) holds another share's download")
            }
            try Data(manifest.encoded()).write(to: manifestURL, options: .atomic)
        } catch let error as ShareError {
            throw error
        } catch {
            throw .io("cannot prepare \(directory.path): \(error.localizedDescription)")
        }
    }

    /// The partial files, opened for writing.
    public func openFiles() throws(ShareError) -> ShareFiles {
        try ShareFiles(writing: manifest.files.indices.map(dataURL), sizes: manifest.files.map(\.size), layout: layout)
    }

    func dataURL(_ file: Int) -> URL { directory.appendingPathComponent("data/\(file)") }

    /// The have-map saved last, if it fits this share.
    public func savedHave() -> BitArray? {
        guard let bytes = try? Data(contentsOf: directory.appendingPathComponent("have")) else { return nil }
        return BitArray(count: layout.pieceCount, packed: bytes)
    }

    /// Saves the have-map (a new file renamed over the old: never half written).
    public func saveHave(_ have: BitArray) throws(ShareError) {
        do {
            try Data(have.packed).write(to: directory.appendingPathComponent("have"), options: .atomic)
        } catch {
            throw .io("cannot save progress in \(directory.path): \(error.localizedDescription)")
        }
    }

    public func savedLayer(file: Int) -> [MerkleTree.Hash]? {
        guard let bytes = try? Data(contentsOf: directory.appendingPathComponent("layers/\(file)")),
              bytes.count == layout.pieces(ofFile: file).count * 32 else { return nil }
        return MerkleTree.hashes(packed: bytes)
    }

    public func saveLayer(_ layer: [MerkleTree.Hash], file: Int) throws(ShareError) {
        do {
            try Data(layer.joined()).write(to: directory.appendingPathComponent("layers/\(file)"), options: .atomic)
        } catch {
            throw .io("cannot save hashes in \(directory.path): \(error.localizedDescription)")
        }
    }

    /// Removes the partial directory (a download given up with nothing in it).
    public func discard() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Puts the verified share under its name and removes the partial directory.
    /// Returns the share's final URL.
    public func finish(_ files: ShareFiles) throws(ShareError) -> URL {
        files.synchronize()
        do {
            let source: URL
            switch manifest.kind {
            case .file:
                source = dataURL(0)
            case .directory:
                // Assembled inside the partial directory, then moved in one rename.
                let tree = directory.appendingPathComponent("tree")
                try? FileManager.default.removeItem(at: tree)
                for (index, file) in manifest.files.enumerated() {
                    let destination = tree.appendingPathComponent(file.path)
                    try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
                    try FileManager.default.moveItem(at: dataURL(index), to: destination)
                }
                source = tree.appendingPathComponent(manifest.name)
            }
            guard try ReceiveDirectory.place(source, at: target) else {
                throw ShareError.io("\(target.path) appeared while downloading; the download stays in \(directory.path)")
            }
        } catch let error as ShareError {
            throw error
        } catch {
            throw .io("cannot put \(manifest.name) in place: \(error)")
        }
        try? FileManager.default.removeItem(at: directory)
        return target
    }
}

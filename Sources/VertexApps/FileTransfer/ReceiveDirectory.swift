import CVertexSystem
import Crypto
import Foundation
import Q2Q

/// The receiver's target directory: where each offered path lands, and the checks that
/// keep every write inside it. Paths are already known to be safe strings
/// (``FileTransferMessage/isSafePath(_:)``); what remains is what is on disk: a
/// component that exists must be a real directory (a symbolic link could lead out), and
/// nothing is overwritten.
public struct ReceiveDirectory: Sendable {
    public let root: URL

    public init(_ root: URL) {
        self.root = root.standardizedFileURL
    }

    func finalURL(for path: String) -> URL {
        root.appendingPathComponent(path)
    }

    /// `dir/.NAME.TAG.vertex-partial` beside where `dir/NAME` will be. TAG names the
    /// sender and the SHA-256 it offered: a partial file is resumed only by the same
    /// sender for the same content, never offered as held to somebody else (who would
    /// learn its size and hash, and could complete it into a mixed-origin file).
    func partialURL(for path: String, from sender: Q2QAddress, sha256: String) -> URL {
        let final = finalURL(for: path)
        let tag = SHA256.hash(data: Data("\(sender)\u{0}\(sha256)".utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        return final.deletingLastPathComponent()
            .appendingPathComponent(".\(final.lastPathComponent).\(tag)\(FileTransferMessage.partialSuffix)")
    }

    /// Why `file` cannot be received here from `sender`, if it cannot.
    func problem(with file: FileTransferMessage.Offer.File, from sender: Q2QAddress) -> String? {
        if let problem = problem(with: file.name) { return problem }
        if Self.kind(of: partialURL(for: file.name, from: sender, sha256: file.sha256)) == .symbolicLink {
            return "\(file.name): its partial file is a symbolic link"
        }
        return nil
    }

    /// Why `path` cannot be received here, if it cannot.
    func problem(with path: String) -> String? {
        var current = root
        let components = path.split(separator: "/").map(String.init)
        for component in components.dropLast() {
            current.appendPathComponent(component)
            switch Self.kind(of: current) {
            case nil, .directory?: continue
            case .symbolicLink?: return "\(path): \(component) is a symbolic link in the target directory"
            case .other?: return "\(path): \(component) exists and is not a directory"
            }
        }
        if Self.kind(of: finalURL(for: path)) != nil {
            return "\(path) exists already in the target directory"
        }
        return nil
    }

    /// Creates the directories leading to `path`, checking each again (the disk may have
    /// changed since the offer was checked).
    func prepare(_ path: String) throws {
        if let problem = problem(with: path) { throw FileTransferError(problem) }
        var current = root
        for component in path.split(separator: "/").dropLast() {
            current.appendPathComponent(String(component))
            if Self.kind(of: current) == nil {
                do {
                    try FileManager.default.createDirectory(at: current, withIntermediateDirectories: false)
                } catch {
                    throw FileTransferError("cannot create \(current.path): \(error.localizedDescription)")
                }
            }
            guard Self.kind(of: current) == .directory else {
                throw FileTransferError("\(current.path) is not a directory")
            }
        }
    }

    /// Moves a verified partial file to its name, unless something is there already: on
    /// Linux in one step (renameat2 with RENAME_NOREPLACE), so nothing that appears
    /// between a check and the rename is replaced. `false` when the name is taken.
    public static func place(_ partial: URL, at final: URL) throws -> Bool {
        if vertex_rename_noreplace(partial.path, final.path) == 0 { return true }
        switch errno {
        case EEXIST:
            return false
        case ENOSYS, EINVAL:
            // No RENAME_NOREPLACE here (another system, or a file system without it).
            guard kind(of: final) == nil else { return false }
            try FileManager.default.moveItem(at: partial, to: final)
            return true
        default:
            throw FileTransferError("cannot rename \(partial.lastPathComponent) to \(final.lastPathComponent): \(String(cString: strerror(errno)))")
        }
    }

    /// Bytes free for us in the directory's file system, when the system says.
    public func availableBytes() -> Int64? {
        var status = statvfs()
        guard statvfs(root.path, &status) == 0 else { return nil }
        return Int64(status.f_bavail) * Int64(status.f_frsize)
    }

    public enum Kind: Sendable { case directory, symbolicLink, other }

    /// What is at `url`, without following a symbolic link; `nil` when nothing is.
    public static func kind(of url: URL) -> Kind? {
        var status = stat()
        guard lstat(url.path, &status) == 0 else { return nil }
        switch status.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFLNK: return .symbolicLink
        default: return .other
        }
    }
}

import Foundation

/// What a send offers: each path given, directories walked recursively, every file
/// named by its path relative to the given path's parent (`photos/2024/a.jpg` for a
/// file under the directory `photos`).
public struct FileSelection: Sendable {
    public struct Entry: Sendable, Equatable {
        public var url: URL
        public var name: String
    }

    public private(set) var entries: [Entry] = []

    /// Collects `paths`. A symbolic link given on the command line is followed; one
    /// found inside a directory is refused (it could lead anywhere), as are devices,
    /// sockets and pipes. Empty directories carry nothing and are left out.
    public init(_ paths: [URL]) throws {
        for path in paths {
            let given = path.standardizedFileURL
            let name = given.lastPathComponent
            guard FileTransferMessage.isSafePath(name) else {
                throw FileTransferError("\(path.path): cannot send a file by that name")
            }
            let resolved = given.resolvingSymlinksInPath()
            switch ReceiveDirectory.kind(of: resolved) {
            case nil: throw FileTransferError("\(path.path): no such file or directory")
            case .directory?: try walk(resolved, as: name)
            case .other? where Self.isRegularFile(resolved): entries.append(Entry(url: resolved, name: name))
            default: throw FileTransferError("\(path.path) is not a regular file or a directory")
            }
        }
        guard !entries.isEmpty else { throw FileTransferError("nothing to send: no files under \(paths.map(\.path).joined(separator: ", "))") }
        var seen = Set<String>()
        for entry in entries where !seen.insert(entry.name).inserted {
            throw FileTransferError("two files would arrive as \(entry.name)")
        }
    }

    private mutating func walk(_ directory: URL, as name: String) throws {
        let children: [String]
        do {
            children = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        } catch {
            throw FileTransferError("cannot read the directory \(directory.path): \(error.localizedDescription)")
        }
        for child in children {
            let url = directory.appendingPathComponent(child)
            let childName = "\(name)/\(child)"
            guard FileTransferMessage.isSafePath(childName) else {
                throw FileTransferError("\(url.path): cannot send a file by that name")
            }
            switch ReceiveDirectory.kind(of: url) {
            case .directory?: try walk(url, as: childName)
            case .symbolicLink?: throw FileTransferError("\(url.path) is a symbolic link; only files and directories are sent")
            case .other? where Self.isRegularFile(url): entries.append(Entry(url: url, name: childName))
            case .other?: throw FileTransferError("\(url.path) is not a regular file")
            case nil: continue   // gone since it was listed
            }
        }
    }

    static func isRegularFile(_ url: URL) -> Bool {
        var status = stat()
        return lstat(url.path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
    }
}

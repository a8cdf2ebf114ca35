import Foundation
import NIOCore
import Q2Q
import VertexApps

/// A file the browser uploaded, waiting to be sent.
struct PendingUpload {
    var directory: URL
    var added: ContinuousClock.Instant
}

extension VertexApp {
    static let uploadLifetime: Duration = .seconds(86_400)

    /// What an upload became: an id to name it in ``send(from:to:uploads:paths:)``.
    public struct Upload: Codable, Sendable {
        public var id: String
        public var name: String
        public var size: Int64
    }

    /// Keeps a file the browser uploads (its bytes as they come) until it is sent. The
    /// name is one path component a receiver would accept; nothing else of the browser's
    /// choosing reaches the file system.
    public func upload<Body: AsyncSequence>(name: String, body: Body) async throws -> Upload where Body.Element == ByteBuffer {
        guard FileTransferMessage.isSafePath(name), !name.contains("/") else {
            throw VertexAppError(.badRequest, "cannot send a file named '\(name.prefix(64))'")
        }
        let id = Self.newID()
        let directory = configuration.uploads.appendingPathComponent(id)
        let file = directory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var size: Int64 = 0
        do {
            guard FileManager.default.createFile(atPath: file.path, contents: nil) else {
                throw VertexAppError(.failed, "cannot keep the upload in \(configuration.uploads.path)")
            }
            let handle = try FileHandle(forWritingTo: file)
            defer { try? handle.close() }
            for try await chunk in body {
                size += Int64(chunk.readableBytes)
                guard size <= FileTransferMessage.maximumFileSize else { throw VertexAppError(.badRequest, "the file is too large") }
                try chunk.withUnsafeReadableBytes { try handle.write(contentsOf: $0) }
            }
        } catch {
            // A broken upload leaves nothing that could be sent as if it were whole.
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        // Uploads never sent (the page was closed before Send) are dropped after a day.
        let stale = state.withLock { state in
            state.uploads[id] = PendingUpload(directory: directory, added: .now)
            let old = state.uploads.filter { .now - $0.value.added > Self.uploadLifetime }
            for key in old.keys { state.uploads[key] = nil }
            return old.values.map(\.directory)
        }
        for directory in stale { try? FileManager.default.removeItem(at: directory) }
        return Upload(id: id, name: name, size: size)
    }

    /// Starts sending, from one of our identities to `to`, the uploads named and the
    /// files or directories at `paths` (typed by the user on this computer). Returns
    /// the transfer's id at once; the page follows it in the snapshots.
    public func send(from: String, to: String, uploads: [String], paths: [String]) async throws -> String {
        guard let from = try? Q2QAddress(from), try await ourIdentities().contains(where: { $0.address == from }) else {
            throw VertexAppError(.badRequest, "'\(from)' is not one of your identities here")
        }
        guard let to = try? Q2QAddress(to), !to.resource.isEmpty else {
            throw VertexAppError(.badRequest, "'\(to)' is not an address (user@domain)")
        }
        let uploaded = try state.withLock { state in
            try uploads.map { id in
                guard let upload = state.uploads.removeValue(forKey: id) else {
                    throw VertexAppError(.notFound, "no upload \(id) (sent already, or the app restarted)")
                }
                return upload.directory
            }
        }
        let typed = paths.map { path in
            URL(fileURLWithPath: (path.trimmingCharacters(in: .whitespaces) as NSString).expandingTildeInPath)
        }
        let selection: FileSelection
        do {
            let uploadedFiles = try uploaded.map { directory in
                try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            }.flatMap { $0 }
            selection = try FileSelection(uploadedFiles + typed)
        } catch {
            for directory in uploaded { try? FileManager.default.removeItem(at: directory) }
            throw VertexAppError(.badRequest, "\(error)")
        }
        let id = Self.newID()
        addTransfer(TransferRecord(id: id, direction: .send, local: from, peer: to, state: .connecting,
                                   files: selection.entries.map(\.name)))
        // Not kept: stopping the node ends its streams, and so this task.
        Task { [self] in
            defer { for directory in uploaded { try? FileManager.default.removeItem(at: directory) } }
            do {
                let stream = try await node.connect(from: from, to: to, service: FileTransferMessage.service)
                noteConnection(stream, incoming: false)
                updateTransfer(id) { record in
                    record.method = stream.method.description
                    record.state = .waiting
                }
                let summary = try await FileSender.send(selection, over: stream) { [self] sent, total in
                    progress(id, bytes: sent, of: total)
                }
                updateTransfer(id) { $0.bytes = summary.bytesSent }
                finishTransfer(id, verified: summary.verified, error: summary.verified ? nil : "the receiver could not verify the files")
            } catch {
                finishTransfer(id, verified: false, error: "\(error)")
            }
        }
        return id
    }
}

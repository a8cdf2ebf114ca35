import CVertexSystem
import Crypto
import Foundation
import NIOCore
import Q2Q

/// What a receive achieved.
public struct FileReceiveSummary: Sendable {
    public var peer: Q2QAddress
    public var files: [URL]
    public var bytesReceived: Int64
    public var verified: Bool
}

/// Receives files from a ``FileSender`` into a directory (creating the subdirectories
/// the offered paths name). A file becomes visible under its name only once its
/// SHA-256 matched; until then it is `.NAME.vertex-partial` in the same directory, from
/// which an interrupted transfer resumes.
public enum FileReceiver {
    /// Whether an offer is accepted: `nil` to accept, else the reason given to the sender.
    public typealias Decision = @Sendable (FileTransferMessage.Offer, Q2QAddress) async -> String?

    /// What a receiver allows beyond the defaults.
    public struct Options: Sendable {
        /// Whether offered paths may have hidden components (a name starting with `.`).
        /// Off: nobody plants `.ssh/authorized_keys` or `.bashrc` in the directory.
        public var allowHidden: Bool
        /// How long the sender may stay silent (the user's decision aside) before the
        /// transfer is given up: a sender that connects and sends nothing holds nothing.
        public var idleTimeout: Duration
        /// Free space a transfer must leave on the receiver's file system: an offer that
        /// would take more is refused before any data comes. nil checks nothing up front
        /// (a full disk then ends the transfer when a write fails).
        public var minimumFreeSpace: Int64?

        public init(allowHidden: Bool = false, idleTimeout: Duration = .seconds(60), minimumFreeSpace: Int64? = 64 << 20) {
            self.allowHidden = allowHidden
            self.idleTimeout = idleTimeout
            self.minimumFreeSpace = minimumFreeSpace
        }
    }

    static func partialURL(for name: String, in directory: URL, from sender: Q2QAddress, sha256: String) -> URL {
        ReceiveDirectory(directory).partialURL(for: name, from: sender, sha256: sha256)
    }

    /// Receives one transfer from `stream` into `directory` (which must exist); `progress`
    /// is told (bytes so far, bytes to receive) once the data starts.
    public static func receive(_ stream: Q2QStream, into directory: URL, options: Options = Options(), decide: Decision,
                               progress: @escaping @Sendable (Int64, Int64) -> Void = { _, _ in }) async throws -> FileReceiveSummary {
        let target = ReceiveDirectory(directory)
        let watchdog = IdleWatchdog(channel: stream.channel.channel, timeout: options.idleTimeout)
        defer { watchdog.stop() }
        return try await stream.channel.executeThenClose { inbound, outbound in
            var reader = StreamReader(inbound, watchdog: watchdog)
            let offer = try await reader.message(FileTransferMessage.Offer.self)
            func refuse(_ reason: String) async throws -> Never {
                try await outbound.send(FileTransferMessage.Answer(accept: false, reason: reason, held: []))
                outbound.finish()
                throw FileTransferError("refused \(stream.peer)'s files: \(reason)")
            }
            if let problem = check(offer, from: stream.peer, directory: directory, allowHidden: options.allowHidden) { try await refuse(problem) }
            // The user may take their time: the sender waits, and so do we.
            watchdog.pause()
            let refusal = await decide(offer, stream.peer)
            watchdog.resume()
            if let reason = refusal { try await refuse(reason) }

            var held: [FileTransferMessage.Answer.Held] = []
            // The SHA-256 of each held part, kept to go on with what arrives (so no file
            // is read again after it is received).
            var heldHashers: [SHA256?] = []
            let partials = offer.files.map { target.partialURL(for: $0.name, from: stream.peer, sha256: $0.sha256) }
            for (file, partial) in zip(offer.files, partials) {
                let size = ((try? FileManager.default.attributesOfItem(atPath: partial.path))?[.size] as? NSNumber)?.int64Value ?? 0
                if size > 0, size <= file.size, let hasher = try? FileDigest.hasher(of: partial) {
                    held.append(.init(bytes: size, sha256: FileDigest.hex(hasher.finalize())))
                    heldHashers.append(hasher)
                } else {
                    held.append(.init(bytes: 0, sha256: ""))
                    heldHashers.append(nil)
                }
            }
            // Room for what is still to come, and a margin: an accepted sender must not
            // fill the disk (review L6).
            let needed = zip(offer.files, held).reduce(Int64(0)) { $0 + ($1.0.size - $1.1.bytes) }
            if let margin = options.minimumFreeSpace, let available = target.availableBytes(), needed > available - margin {
                try await refuse("not enough space: \(needed) bytes to receive, \(max(0, available - margin)) free")
            }
            try await outbound.send(FileTransferMessage.Answer(accept: true, reason: nil, held: held))
            let start = try await reader.message(FileTransferMessage.Start.self)
            guard start.offsets.count == offer.files.count,
                  zip(start.offsets, held).allSatisfy({ $0 == 0 || $0 == $1.bytes }) else {
                throw FileTransferError("\(stream.peer) sent a malformed start")
            }

            var received: Int64 = 0
            let toReceive = zip(offer.files, start.offsets).reduce(Int64(0)) { $0 + $1.0.size - $1.1 }
            var verified: [Bool] = []
            var finals: [URL] = []
            for (index, file) in offer.files.enumerated() {
                let partial = partials[index]
                var hasher = start.offsets[index] > 0 ? heldHashers[index]! : SHA256()
                do {
                    try target.prepare(file.name)
                    try await receiveData(of: file, from: start.offsets[index], into: partial, hashing: &hasher, reader: &reader) { count in
                        received += count
                        progress(received, toReceive)
                    }
                } catch let error as FileTransferError where error.fromPeer {
                    throw error
                } catch {
                    // Our side failed (disk full, a directory gone…): tell the sender why
                    // before the stream closes, then stop. The partial file stays partial.
                    let reason = "the receiver could not write \(file.name): \(Self.describe(error))"
                    try? await outbound.send(FileTransferMessage.Result(verified: [], reason: reason))
                    outbound.finish()
                    throw FileTransferError(reason)
                }
                let final = target.finalURL(for: file.name)
                if FileDigest.hex(hasher.finalize()) == file.sha256, try ReceiveDirectory.place(partial, at: final) {
                    verified.append(true)
                    finals.append(final)
                } else {
                    try? FileManager.default.removeItem(at: partial)
                    verified.append(false)
                }
            }
            try await outbound.send(FileTransferMessage.Result(verified: verified, reason: verified.allSatisfy { $0 } ? nil : "SHA-256 mismatch"))
            outbound.finish()
            await reader.awaitPeerEnd(of: stream.channel.channel)
            return FileReceiveSummary(peer: stream.peer, files: finals, bytesReceived: received, verified: verified.allSatisfy { $0 })
        }
    }

    /// Appends `file`'s data from `offset` to `partial` (cut to `offset` first), and to `hasher`.
    private static func receiveData(of file: FileTransferMessage.Offer.File, from offset: Int64, into partial: URL,
                                    hashing hasher: inout SHA256, reader: inout StreamReader,
                                    received: (Int64) -> Void) async throws {
        if !FileManager.default.fileExists(atPath: partial.path) {
            guard FileManager.default.createFile(atPath: partial.path, contents: nil) else {
                throw FileTransferError("cannot create \(partial.path) (is \(partial.deletingLastPathComponent().path) writable?)")
            }
        }
        let handle = try FileHandle(forWritingTo: partial)
        defer { try? handle.close() }
        try handle.truncate(atOffset: UInt64(offset))
        try handle.seekToEnd()
        var remaining = file.size - offset
        var writeback = EarlyWriteback(descriptor: handle.fileDescriptor, from: offset)
        while remaining > 0 {
            let chunk = try await reader.data(upTo: Int(min(remaining, 1 << 20)))
            try chunk.withUnsafeReadableBytes { bytes in
                hasher.update(bufferPointer: bytes)
                try handle.write(contentsOf: bytes)
            }
            remaining -= Int64(chunk.readableBytes)
            received(Int64(chunk.readableBytes))
            writeback.wrote(chunk.readableBytes)
        }
        // On disk before it may be renamed into place: a crash never leaves a complete-
        // looking file with missing data.
        try handle.synchronize()
    }

    /// An error on one line, without Foundation's "The operation could not be completed." preamble.
    static func describe(_ error: any Error) -> String {
        if let error = error as? FileTransferError { return error.description }
        let nsError = error as NSError
        if nsError.domain == NSPOSIXErrorDomain || nsError.domain == NSCocoaErrorDomain,
           let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if nsError.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(nsError.code))) }
        return nsError.localizedDescription.replacingOccurrences(of: "\n", with: " ")
    }

    /// Why an offer cannot be taken into `directory`, if it cannot.
    package static func check(_ offer: FileTransferMessage.Offer, from sender: Q2QAddress, directory: URL, allowHidden: Bool = false) -> String? {
        guard offer.version == FileTransferMessage.version else { return "version \(offer.version) is not supported" }
        guard !offer.files.isEmpty, offer.files.count <= 10_000 else { return "between 1 and 10,000 files, please" }
        let target = ReceiveDirectory(directory)
        guard ReceiveDirectory.kind(of: target.root) == .directory else { return "the receiver's directory is not there" }
        var names = Set<String>()
        var directories = Set<String>()
        for file in offer.files {
            guard FileTransferMessage.isSafePath(file.name) else {
                return "'\(file.name.prefix(64))' is not a safe relative path (no '..', no absolute paths)"
            }
            guard allowHidden || !file.name.split(separator: "/").contains(where: { $0.hasPrefix(".") }) else {
                return "'\(file.name.prefix(64))' is a hidden path (the receiver takes those only with --allow-hidden)"
            }
            guard names.insert(file.name).inserted else { return "'\(file.name)' is offered twice" }
            var parent = Substring("")
            for component in file.name.split(separator: "/").dropLast() {
                parent = parent.isEmpty ? component : "\(parent)/\(component)"
                directories.insert(String(parent))
            }
            guard file.size >= 0, file.size <= FileTransferMessage.maximumFileSize,
                  file.sha256.count == 64, file.sha256.allSatisfy(\.isHexDigit) else {
                return "'\(file.name)' has a bad size (0 to 1 PiB) or SHA-256"
            }
            if let problem = target.problem(with: file, from: sender) { return problem }
        }
        // A file and a directory by the same path cannot both arrive.
        if let clash = names.intersection(directories).first { return "'\(clash)' is offered as a file and as a directory" }
        return nil
    }
}

/// Starts the disk writing a received file's data while more arrives, so that the
/// `fsync` before the rename waits only for the last few MiB. Without it the kernel
/// holds a whole 1 GiB file in the page cache (below its dirty thresholds) and writes
/// all of it in that final `fsync`, after the transfer: the time of the network and of
/// the disk added up instead of overlapping.
struct EarlyWriteback {
    /// Writeback is started for each this many bytes written.
    static let step = 8 << 20
    let descriptor: Int32
    var started: Int64
    var pending = 0

    init(descriptor: Int32, from offset: Int64) {
        self.descriptor = descriptor
        self.started = offset
    }

    mutating func wrote(_ count: Int) {
        pending += count
        guard pending >= Self.step else { return }
        // Asynchronous: queues the range for writing and returns. A failure here only
        // loses the overlap; the fsync that follows reports real write errors.
        _ = vertex_start_writeback(descriptor, started, Int64(pending))
        started += Int64(pending)
        pending = 0
    }
}

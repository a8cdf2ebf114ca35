import Foundation
import NIOCore
import Q2Q

/// What a send achieved.
public struct FileSendSummary: Sendable, Codable {
    public var files: [String]
    /// Bytes of file data sent (a resumed file counts from where it resumed).
    public var bytesSent: Int64
    public var totalBytes: Int64
    public var seconds: Double
    public var method: String
    public var verified: Bool
}

/// Sends files over a Q2Q stream to a ``FileReceiver``.
public enum FileSender {
    /// Up to `count` bytes from the file's current position, read straight into the
    /// buffer that goes to the stream (through `Data` it was an extra allocation and copy
    /// per chunk); empty at the end of the file.
    static func read(upTo count: Int, from handle: FileHandle, path: String) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        do {
            try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { memory in
                try FileDigest.readFile(handle.fileDescriptor, into: memory.baseAddress!, upTo: count)
            }
        } catch {
            throw FileTransferError("cannot read \(path): \(error)")
        }
        return buffer
    }

    /// 256 KiB reads; smaller ones when paced slowly, so the pace stays smooth.
    static func chunkSize(_ maximumRate: Int?) -> Int {
        guard let maximumRate, maximumRate > 0 else { return 256 * 1024 }
        return max(16 * 1024, min(256 * 1024, maximumRate / 20))
    }

    /// Offers the files at `paths` (directories recursively, see ``FileSelection``),
    /// resumes what the receiver already holds (after checking that part against our
    /// own file), streams the rest, and waits for the receiver's SHA-256 verdict.
    /// `progress` is told (bytes so far, bytes to send). `maximumRate`, in bytes per
    /// second, paces the data for links the sender must share.
    public static func send(_ paths: [URL], over stream: Q2QStream, maximumRate: Int? = nil,
                            progress: @escaping @Sendable (Int64, Int64) -> Void = { _, _ in }) async throws -> FileSendSummary {
        try await send(try FileSelection(paths), over: stream, maximumRate: maximumRate, progress: progress)
    }

    /// Sends what `selection` collected, as above.
    public static func send(_ selection: FileSelection, over stream: Q2QStream, maximumRate: Int? = nil,
                            progress: @escaping @Sendable (Int64, Int64) -> Void = { _, _ in }) async throws -> FileSendSummary {
        let files = selection.entries.map(\.url)
        var entries: [FileTransferMessage.Offer.File] = []
        for entry in selection.entries {
            let size: Int64
            let digest: String
            do {
                let attributes = try FileManager.default.attributesOfItem(atPath: entry.url.path)
                size = (attributes[.size] as! NSNumber).int64Value
                digest = try FileDigest.sha256(of: entry.url)
            } catch {
                throw FileTransferError("cannot read \(entry.url.path): \(FileReceiver.describe(error))")
            }
            entries.append(.init(name: entry.name, size: size, sha256: digest))
        }
        let offer = FileTransferMessage.Offer(version: FileTransferMessage.version, files: entries)
        let start = ContinuousClock.now
        return try await stream.channel.executeThenClose { inbound, outbound in
            var reader = StreamReader(inbound)
            try await outbound.send(offer)
            let answer = try await reader.message(FileTransferMessage.Answer.self)
            guard answer.accept else {
                throw FileTransferError("\(stream.peer) refused the files: \(answer.reason ?? "no reason given")")
            }
            guard answer.held.count == entries.count else { throw FileTransferError("a malformed answer") }
            var offsets: [Int64] = []
            for (index, held) in answer.held.enumerated() {
                let usable = held.bytes > 0 && held.bytes <= entries[index].size
                    && (try? FileDigest.sha256(of: files[index], length: held.bytes)) == held.sha256
                offsets.append(usable ? held.bytes : 0)
            }
            try await outbound.send(FileTransferMessage.Start(offsets: offsets))
            let toSend = zip(entries, offsets).reduce(Int64(0)) { $0 + $1.0.size - $1.1 }
            var sent: Int64 = 0
            let dataStart = ContinuousClock.now
            do {
                for (index, url) in files.enumerated() {
                    let handle: FileHandle
                    do {
                        handle = try FileHandle(forReadingFrom: url)
                    } catch {
                        throw FileTransferError("cannot open \(url.path) (gone since it was offered?): \(error.localizedDescription)")
                    }
                    defer { try? handle.close() }
                    try handle.seek(toOffset: UInt64(offsets[index]))
                    var remaining = entries[index].size - offsets[index]
                    while remaining > 0 {
                        let chunk = try Self.read(upTo: Int(min(remaining, Int64(chunkSize(maximumRate)))), from: handle, path: url.path)
                        guard chunk.readableBytes > 0 else {
                            throw FileTransferError("\(url.path) became shorter while it was being sent")
                        }
                        try await outbound.write(chunk)
                        remaining -= Int64(chunk.readableBytes)
                        sent += Int64(chunk.readableBytes)
                        progress(sent, toSend)
                        if let maximumRate, maximumRate > 0 {
                            // Sleep until the bytes sent so far are due at that rate.
                            let due = dataStart + .seconds(Double(sent) / Double(maximumRate))
                            if due > ContinuousClock.now { try await Task.sleep(until: due, clock: .continuous) }
                        }
                    }
                }
            } catch let error as FileTransferError {
                throw error
            } catch {
                // The receiver may have stopped the transfer, saying why before it closed.
                if let result = try? await reader.message(FileTransferMessage.Result.self), let reason = result.reason {
                    throw FileTransferError("\(stream.peer) stopped the transfer: \(reason)")
                }
                throw FileTransferError("the stream to \(stream.peer) failed while sending: \(error)")
            }
            let result = try await reader.message(FileTransferMessage.Result.self)
            guard result.verified.count == entries.count else {
                throw FileTransferError("\(stream.peer) stopped the transfer: \(result.reason ?? "no reason given")")
            }
            outbound.finish()
            let elapsed = ContinuousClock.now - start
            await reader.awaitPeerEnd(of: stream.channel.channel)
            let summary = FileSendSummary(files: entries.map(\.name), bytesSent: sent, totalBytes: offer.totalBytes,
                                          seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                                          method: stream.method.description, verified: result.verified.allSatisfy { $0 })
            guard summary.verified else {
                let bad = zip(entries, result.verified).filter { !$0.1 }.map(\.0.name)
                throw FileTransferError("the receiver could not verify \(bad.joined(separator: ", ")) (changed while sent?): \(result.reason ?? "SHA-256 mismatch")")
            }
            return summary
        }
    }
}

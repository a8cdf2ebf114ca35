import Foundation
import NIOCore

/// The files of a share on disk, read and written by piece at their offsets (pread and
/// pwrite on descriptors opened once; safe from any thread). A seeder opens the shared
/// files read-only; a download opens its partial files, which stay valid through the
/// final rename.
public final class ShareFiles: Sendable {
    public let layout: PieceLayout
    private let descriptors: [Int32]
    private let writable: Bool

    /// Opens the files of a complete share for reading (`urls` in manifest order).
    public init(reading urls: [URL], layout: PieceLayout) throws(ShareError) {
        self.layout = layout
        writable = false
        var descriptors: [Int32] = []
        for url in urls {
            let descriptor = open(url.path, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                descriptors.forEach { close($0) }
                throw .io("cannot open \(url.path): \(String(cString: strerror(errno)))")
            }
            descriptors.append(descriptor)
        }
        self.descriptors = descriptors
    }

    /// Opens (creating) the partial files of a download, sized to the files they become.
    init(writing urls: [URL], sizes: [Int64], layout: PieceLayout) throws(ShareError) {
        self.layout = layout
        writable = true
        var descriptors: [Int32] = []
        for (url, size) in zip(urls, sizes) {
            // O_NOFOLLOW: a symbolic link planted at a partial path is not followed.
            let descriptor = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard descriptor >= 0, ftruncate(descriptor, off_t(size)) == 0 else {
                let reason = String(cString: strerror(errno))
                descriptors.forEach { close($0) }
                throw .io("cannot prepare \(url.path): \(reason)")
            }
            descriptors.append(descriptor)
        }
        self.descriptors = descriptors
    }

    deinit {
        descriptors.forEach { close($0) }
    }

    /// Piece `piece`'s bytes.
    public func read(_ piece: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(ShareError) -> ByteBuffer {
        let (file, offset, length) = layout.extent(of: piece)
        var buffer = allocator.buffer(capacity: length)
        let descriptor = descriptors[file]
        let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { pointer in
            var done = 0
            while done < length {
                let n = pread(descriptor, pointer.baseAddress! + done, length - done, off_t(offset) + off_t(done))
                if n > 0 { done += n } else if n < 0, errno == EINTR { continue } else { break }
            }
            return done
        }
        guard count == length else { throw .io("cannot read piece \(piece): \(count < 0 ? String(cString: strerror(errno)) : "the file is shorter than the share says")") }
        return buffer
    }

    /// Writes piece `piece` (already verified).
    func write(_ piece: Int, _ bytes: UnsafeRawBufferPointer) throws(ShareError) {
        precondition(writable, "a shared file is never written")
        let (file, offset, length) = layout.extent(of: piece)
        precondition(bytes.count == length, "a piece is written whole")
        var done = 0
        while done < length {
            let n = pwrite(descriptors[file], bytes.baseAddress! + done, length - done, off_t(offset) + off_t(done))
            if n > 0 { done += n } else if n < 0, errno == EINTR { continue } else {
                throw .io("cannot write piece \(piece): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Waits until what was written is on disk.
    func synchronize() {
        descriptors.forEach { _ = fdatasync($0) }
    }
}

/// The bytes the application wrote and the peer has not acknowledged yet, addressed by
/// stream offset (a retransmission reads the same offsets again).
struct SendStream: Sendable {
    private var chunks: [[UInt8]] = []
    private var starts: [UInt64] = []
    private var head = 0
    /// The offset of the first byte still held.
    private(set) var baseOffset: UInt64 = 0
    /// The offset after the last byte written.
    private(set) var endOffset: UInt64 = 0

    var heldBytes: Int { Int(endOffset - baseOffset) }

    mutating func append(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        chunks.append(bytes)
        starts.append(endOffset)
        endOffset += UInt64(bytes.count)
    }

    /// The bytes of `range`, which must lie within what is held.
    func bytes(in range: Range<UInt64>) -> [UInt8] {
        precondition(range.lowerBound >= baseOffset && range.upperBound <= endOffset, "reading bytes the send stream no longer holds")
        var result: [UInt8] = []
        result.reserveCapacity(range.count)
        var index = chunkIndex(containing: range.lowerBound)
        var cursor = range.lowerBound
        while cursor < range.upperBound {
            let chunkStart = starts[index]
            let chunk = chunks[index]
            let from = Int(cursor - chunkStart)
            let to = min(chunk.count, Int(range.upperBound - chunkStart))
            result.append(contentsOf: chunk[from..<to])
            cursor = chunkStart + UInt64(to)
            index += 1
        }
        return result
    }

    /// Lets go of everything below `offset` (acknowledged).
    mutating func discard(below offset: UInt64) {
        guard offset > baseOffset else { return }
        baseOffset = min(offset, endOffset)
        while head < chunks.count, starts[head] + UInt64(chunks[head].count) <= baseOffset {
            chunks[head] = []
            head += 1
        }
        if head > 64, head * 2 > chunks.count {
            chunks.removeFirst(head)
            starts.removeFirst(head)
            head = 0
        }
    }

    private func chunkIndex(containing offset: UInt64) -> Int {
        var low = head, high = chunks.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if starts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }
}

/// Stream bytes that arrived, reassembled in order: the contiguous part waits for
/// the application to read it; later parts wait for the gaps before them.
struct ReceiveStream: Sendable {
    /// Bytes handed to the application so far.
    private(set) var readOffset: UInt64 = 0
    /// Every byte below this has arrived.
    private(set) var contiguousOffset: UInt64 = 0
    private var readable: [[UInt8]] = []
    private var readableHead = 0
    private(set) var readableBytes = 0
    private var outOfOrder: [UInt64: [UInt8]] = [:]
    private var held = PTCPRangeSet()
    private(set) var heldOutOfOrderBytes = 0
    /// Where the peer's stream ends, once its FIN arrived.
    private(set) var finalOffset: UInt64?

    /// Whether the peer's whole stream has been read.
    var isFinished: Bool { finalOffset == readOffset }

    /// Takes the bytes at `offset`; returns false when they add nothing new.
    @discardableResult
    mutating func insert(offset: UInt64, bytes: [UInt8]) -> Bool {
        let end = offset + UInt64(bytes.count)
        guard end > contiguousOffset else { return false }
        var added = false
        for gap in held.gaps(in: max(offset, contiguousOffset)..<end) {
            // Usually the whole packet is new: keep its array rather than copy it.
            let slice = gap == offset..<end ? bytes : Array(bytes[Int(gap.lowerBound - offset)..<Int(gap.upperBound - offset)])
            outOfOrder[gap.lowerBound] = slice
            heldOutOfOrderBytes += slice.count
            held.insert(gap)
            added = true
        }
        while let segment = outOfOrder.removeValue(forKey: contiguousOffset) {
            heldOutOfOrderBytes -= segment.count
            readable.append(segment)
            readableBytes += segment.count
            contiguousOffset += UInt64(segment.count)
        }
        held.removeAll(below: contiguousOffset)
        return added
    }

    /// Marks where the stream ends; false when the peer already said otherwise.
    mutating func finish(at offset: UInt64) -> Bool {
        if let finalOffset { return finalOffset == offset }
        guard offset >= contiguousOffset, offset >= held.last?.upperBound ?? 0 else { return false }
        finalOffset = offset
        return true
    }

    /// The next contiguous chunk as it arrived (at most `maximum` bytes of it), without
    /// joining chunks: for a reader that copies them into a buffer of its own anyway.
    mutating func readChunk(maximum: Int) -> ArraySlice<UInt8>? {
        guard readableBytes > 0, maximum > 0, readableHead < readable.count else { return nil }
        let chunk = readable[readableHead]
        let result: ArraySlice<UInt8>
        if chunk.count <= maximum {
            result = chunk[...]
            readable[readableHead] = []
            readableHead += 1
            if readableHead > 64, readableHead * 2 > readable.count {
                readable.removeFirst(readableHead)
                readableHead = 0
            }
        } else {
            result = chunk[0..<maximum]
            readable[readableHead] = Array(chunk[maximum...])
        }
        readableBytes -= result.count
        readOffset += UInt64(result.count)
        return result
    }

    /// Up to `maximum` bytes in order, joined, or nil when none are ready.
    mutating func read(maximum: Int) -> [UInt8]? {
        guard let first = readChunk(maximum: maximum) else { return nil }
        var result = Array(first)
        while result.count < maximum, let chunk = readChunk(maximum: maximum - result.count) {
            result.append(contentsOf: chunk)
        }
        return result
    }
}

import AMP
import NIOCore

/// A have-map: bit i set when piece i is held. On the wire as the original's
/// `BitArray`: the number of bits in decimal, a colon, then the bits packed LSB-first
/// (bit i is `(byte[i / 8] >> (i % 8)) & 1`), pad bits zero.
public struct BitArray: Sendable, Hashable, Codable, AMPArgumentCodable {
    public private(set) var count: Int
    private var words: [UInt64]
    public private(set) var setCount = 0

    public init(count: Int, filled: Bool = false) {
        precondition(count >= 0)
        self.count = count
        words = [UInt64](repeating: filled ? ~0 : 0, count: (count + 63) / 64)
        if filled {
            clearPadding()
            setCount = count
        }
    }

    public subscript(index: Int) -> Bool {
        get { words[index >> 6] & (1 << UInt64(index & 63)) != 0 }
        set {
            let mask: UInt64 = 1 << UInt64(index & 63)
            let was = words[index >> 6] & mask != 0
            guard was != newValue else { return }
            if newValue { words[index >> 6] |= mask } else { words[index >> 6] &= ~mask }
            setCount += newValue ? 1 : -1
        }
    }

    public var isComplete: Bool { setCount == count }

    /// Indices of the set bits.
    public var setIndices: [Int] {
        var indices: [Int] = []
        indices.reserveCapacity(setCount)
        for (w, word) in words.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                indices.append(w * 64 + bits.trailingZeroBitCount)
                bits &= bits - 1
            }
        }
        return indices
    }

    private mutating func clearPadding() {
        let extra = words.count * 64 - count
        if extra > 0, !words.isEmpty { words[words.count - 1] &= ~0 >> UInt64(extra) }
    }

    /// The packed bytes (without the count).
    public var packed: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: (count + 7) / 8)
        for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: words[index / 8] >> UInt64(index % 8 * 8)) }
        return bytes
    }

    /// From packed bytes; nil when their length does not fit `count` or pad bits are set.
    public init?(count: Int, packed bytes: some Collection<UInt8>) {
        guard count >= 0, bytes.count == (count + 7) / 8 else { return nil }
        self.init(count: count)
        for (index, byte) in bytes.enumerated() { words[index / 8] |= UInt64(byte) << UInt64(index % 8 * 8) }
        let before = words
        clearPadding()
        guard before == words else { return nil }
        setCount = words.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString("\(count):")
        buffer.writeBytes(packed)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> BitArray {
        let view = buffer.readableBytesView
        guard let colon = view.firstIndex(of: UInt8(ascii: ":")), colon - view.startIndex <= 10,
              let count = Int(String(decoding: view[view.startIndex..<colon], as: UTF8.self)), count >= 0,
              let array = BitArray(count: count, packed: view[(colon + 1)...]) else {
            throw AMPArgumentError(type: "BitArray", message: "not <bits>:<packed bytes> with matching length and zero padding")
        }
        return array
    }

    /// Outside AMP (JSON) the set indices.
    public init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        let count = try container.decode(Int.self)
        self.init(count: count)
        while !container.isAtEnd { self[try container.decode(Int.self)] = true }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(count)
        for index in setIndices { try container.encode(index) }
    }
}

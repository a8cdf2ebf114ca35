import NIOCore

/// Why a byte stream is not valid AMP framing. Any of these ends the connection.
public enum AMPFramingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A key length prefix above 255 (Twisted reports `TooLong` and drops the connection).
    case keyTooLong(length: Int)
    /// An incomplete box already holds more than `AMPLimits.maximumBoxSize` bytes.
    case boxTooLarge(limit: Int)

    public var description: String {
        switch self {
        case .keyTooLong(let length):
            return "AMP key length \(length) exceeds the limit of \(AMPLimits.maximumKeyLength)"
        case .boxTooLarge(let limit):
            return "AMP box exceeds the limit of \(limit) bytes"
        }
    }
}

/// An incremental, sans-I/O AMP box parser.
///
/// Feed it bytes as they arrive; it consumes whole key/value pairs from the buffer and
/// returns a box when its terminator (`00 00`) has been read. A pair that is not yet
/// complete is left in the buffer, so each byte is examined a bounded number of times
/// however the stream is split, and partial input is simply waited on, as Twisted does.
/// Values are slices of the input buffer: no copies.
public struct AMPBoxParser: Sendable {
    public let limits: AMPLimits
    private var pending: [AMPBox.Field] = []
    private var pendingBytes = 0

    public init(limits: AMPLimits = .default) {
        self.limits = limits
    }

    /// Bytes of the box being assembled (complete pairs already consumed).
    public var bufferedBoxBytes: Int { pendingBytes }

    /// Reads the next complete box from `buffer`, or returns `nil` when more bytes are
    /// needed. Throws when the stream cannot be AMP; the connection must then be closed.
    public mutating func nextBox(from buffer: inout ByteBuffer) throws(AMPFramingError) -> AMPBox? {
        while true {
            guard let keyLength = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else {
                return nil
            }
            if keyLength == 0 {
                buffer.moveReaderIndex(forwardBy: 2)
                let box = AMPBox(pending)
                pending = []
                pendingBytes = 0
                return box
            }
            guard keyLength <= AMPLimits.maximumKeyLength else {
                throw .keyTooLong(length: Int(keyLength))
            }
            let valueLengthAt = buffer.readerIndex + 2 + Int(keyLength)
            guard let valueLength = buffer.getInteger(at: valueLengthAt, as: UInt16.self) else {
                try checkSize(adding: buffer.readableBytes)
                return nil
            }
            let pairLength = 4 + Int(keyLength) + Int(valueLength)
            try checkSize(adding: pairLength)
            guard buffer.readableBytes >= pairLength else {
                return nil
            }
            buffer.moveReaderIndex(forwardBy: 2)
            let key = buffer.readString(length: Int(keyLength))!
            buffer.moveReaderIndex(forwardBy: 2)
            let value = buffer.readSlice(length: Int(valueLength))!
            if pending.isEmpty { pending.reserveCapacity(8) }  // one allocation for a typical box
            pending.append(AMPBox.Field(key: key, value: value))
            pendingBytes += pairLength
        }
    }

    private func checkSize(adding bytes: Int) throws(AMPFramingError) {
        if pendingBytes + bytes + 2 > limits.maximumBoxSize {
            throw .boxTooLarge(limit: limits.maximumBoxSize)
        }
    }

    /// Parses a buffer that must hold exactly a sequence of complete boxes
    /// (an `AmpList` value). A truncated trailing box is dropped, as Twisted does.
    public static func boxes(in value: ByteBuffer, limits: AMPLimits = .default) throws(AMPFramingError) -> [AMPBox] {
        var parser = AMPBoxParser(limits: limits)
        var buffer = value
        var result: [AMPBox] = []
        while let box = try parser.nextBox(from: &buffer) {
            result.append(box)
        }
        return result
    }
}

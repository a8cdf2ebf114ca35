import NIOCore

/// Why a box cannot be written. Nothing is sent when serialisation fails.
public enum AMPSerializationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Twisted writes an empty key, which ends the box early on the wire; we refuse it.
    case emptyKey
    case keyTooLong(key: String, length: Int)
    case valueTooLong(key: String, length: Int)

    public var description: String {
        switch self {
        case .emptyKey:
            return "AMP keys cannot be empty"
        case .keyTooLong(let key, let length):
            return "AMP key '\(key.prefix(32))…' is \(length) bytes; the limit is \(AMPLimits.maximumKeyLength)"
        case .valueTooLong(let key, let length):
            return "AMP value of '\(key)' is \(length) bytes; the limit is \(AMPLimits.maximumValueLength)"
        }
    }
}

extension AMPBox {
    /// Writes the box as Twisted does: keys sorted bytewise, then the `00 00` terminator.
    /// Validates every pair before writing any byte, so a failure leaves `buffer` as it was.
    public func serialize(into buffer: inout ByteBuffer) throws(AMPSerializationError) {
        let fields = canonicalFields
        let total = try Self.serializedSize(of: fields)
        buffer.reserveCapacity(minimumWritableBytes: total)
        for field in fields {
            buffer.writeInteger(UInt16(field.key.utf8.count))
            buffer.writeString(field.key)
            buffer.writeInteger(UInt16(field.value.readableBytes))
            var value = field.value
            buffer.writeBuffer(&value)
        }
        buffer.writeInteger(UInt16(0))
    }

    /// Throws what `serialize` would throw, without writing anything.
    public func validateForSerialization() throws(AMPSerializationError) {
        _ = try Self.serializedSize(of: fields)
    }

    private static func serializedSize(of fields: [Field]) throws(AMPSerializationError) -> Int {
        var total = 2
        for field in fields {
            let keyLength = field.key.utf8.count
            if keyLength == 0 { throw .emptyKey }
            if keyLength > AMPLimits.maximumKeyLength { throw .keyTooLong(key: field.key, length: keyLength) }
            if field.value.readableBytes > AMPLimits.maximumValueLength {
                throw .valueTooLong(key: field.key, length: field.value.readableBytes)
            }
            total += 4 + keyLength + field.value.readableBytes
        }
        return total
    }

    /// The box's wire bytes.
    public func serialized(allocator: ByteBufferAllocator = ByteBufferAllocator()) throws(AMPSerializationError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        try serialize(into: &buffer)
        return buffer
    }
}

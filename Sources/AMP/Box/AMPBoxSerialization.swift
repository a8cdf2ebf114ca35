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
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            var writer = BoxWriter(out)
            for field in fields { writer.put(field) }
            writer.putLength(0)
            return writer.offset
        }
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

extension AMPBox {
    /// Writes the box as a request: `_ask` (the tag in lowercase hex, when given) and
    /// `_command` go in their places in wire order and replace any equal key of the
    /// arguments — the box `append` would make, written without building the reserved
    /// values as buffers or inserting them (a tenth of a busy caller's time).
    /// Validates before writing any byte, as `serialize` does.
    func serializeRequest(into buffer: inout ByteBuffer, command: String, tag: Int?) throws(AMPSerializationError) {
        let fields = canonicalFields
        func replaced(_ key: String) -> Bool { key == "_command" || (tag != nil && key == "_ask") }
        var commandName = command
        let commandLength = commandName.utf8.count
        if commandLength > AMPLimits.maximumValueLength {
            throw .valueTooLong(key: "_command", length: commandLength)
        }
        let tagDigits = tag.map(Self.hexDigitCount) ?? 0
        var total = try Self.serializedSize(of: fields) + 4 + "_command".utf8.count + commandLength
        if tag != nil { total += 4 + "_ask".utf8.count + tagDigits }
        for field in fields where replaced(field.key) { total -= 4 + field.key.utf8.count + field.value.readableBytes }

        // The reserved keys, in wire order: "_ask" < "_command".
        var reservedLeft = tag == nil ? 1 : 2
        func nextReservedKey() -> String { reservedLeft == 2 ? "_ask" : "_command" }

        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
            var writer = BoxWriter(out)
            func putReserved() {
                if reservedLeft == 2, let tag {
                    writer.put(key: "_ask")
                    writer.putLength(tagDigits)
                    Self.writeHex(tag, digits: tagDigits, to: writer.unwritten)
                    writer.offset += tagDigits
                } else {
                    writer.put(key: "_command")
                    writer.putLength(commandLength)
                    commandName.withUTF8 { writer.put(UnsafeRawBufferPointer($0)) }
                }
                reservedLeft -= 1
            }
            for field in fields where !replaced(field.key) {
                while reservedLeft > 0, Self.precedesBytewise(nextReservedKey(), field.key) { putReserved() }
                writer.put(field)
            }
            while reservedLeft > 0 { putReserved() }
            writer.putLength(0)
            return writer.offset
        }
    }

    /// The request's wire bytes (see `serializeRequest(into:command:tag:)`).
    func serializedRequest(command: String, tag: Int?, allocator: ByteBufferAllocator) throws(AMPSerializationError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        try serializeRequest(into: &buffer, command: command, tag: tag)
        return buffer
    }

    /// Digits of a positive tag in hex, without leading zeros.
    private static func hexDigitCount(_ tag: Int) -> Int {
        precondition(tag > 0, "tags count from 1")
        return (Int.bitWidth - tag.leadingZeroBitCount + 3) / 4
    }

    /// Writes `tag` as `digits` lowercase hex digits at the start of `out`.
    private static func writeHex(_ tag: Int, digits: Int, to out: UnsafeMutableRawBufferPointer) {
        for index in 0..<digits {
            let nibble = UInt8(truncatingIfNeeded: tag >> (4 * (digits - 1 - index))) & 0xF
            out[index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
        }
    }
}

/// Writes pairs straight into memory already sized for them. One write of a whole box
/// into the buffer's memory: a `ByteBuffer` write per length, key and value (four per
/// pair) each pays for a check of exclusive access to the buffer's storage, which showed
/// as a tenth of a busy connection's time.
private struct BoxWriter {
    let out: UnsafeMutableRawBufferPointer
    var offset = 0

    init(_ out: UnsafeMutableRawBufferPointer) { self.out = out }

    var unwritten: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: out[offset...]) }

    mutating func putLength(_ length: Int) {
        out[offset] = UInt8(truncatingIfNeeded: length >> 8)
        out[offset + 1] = UInt8(truncatingIfNeeded: length)
        offset += 2
    }

    mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        (out.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count)
        offset += bytes.count
    }

    mutating func put(key: String) {
        var key = key
        key.withUTF8 { utf8 in
            putLength(utf8.count)
            put(UnsafeRawBufferPointer(utf8))
        }
    }

    mutating func put(_ field: AMPBox.Field) {
        put(key: field.key)
        putLength(field.value.readableBytes)
        field.value.withUnsafeReadableBytes { put($0) }
    }
}

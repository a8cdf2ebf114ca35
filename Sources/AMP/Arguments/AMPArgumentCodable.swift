import Foundation
import NIOCore

/// A value that AMP carries as one argument, with its own byte encoding.
///
/// The built-in conformances are Twisted's argument types:
///
/// | Swift | AMP type |
/// |---|---|
/// | `Int`, ``AMPInteger`` | `Integer` (``AMPInteger`` for any size) |
/// | `String` | `Unicode` |
/// | `Data`, `[UInt8]` (in commands) | `String` (bytes) |
/// | `Bool` | `Boolean` |
/// | `Double` | `Float` |
/// | ``AMPDecimal`` | `Decimal` |
/// | ``AMPDateTime`` | `DateTime` |
/// | `[T]` where `T` is one of these | `ListOf(T)` |
/// | `[Row]` where `Row` is a `Codable` struct | `AmpList` |
///
/// Other modules add their own types (certificates, `host:port`, Q2Q addresses) by
/// conforming to this protocol; the command encoder then treats them as leaves.
public protocol AMPArgumentCodable: Sendable {
    /// Appends this value's AMP encoding.
    func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError)
    /// Decodes a value from exactly the bytes of one argument.
    static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Self
}

/// A value that is not a valid encoding of its AMP type, or cannot be encoded.
public struct AMPArgumentError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The AMP type, e.g. `Integer`.
    public var type: String
    public var message: String

    public init(type: String, message: String) {
        self.type = type
        self.message = message
    }

    public var description: String { "bad AMP \(type): \(message)" }

    static func invalid(_ type: String, _ buffer: ByteBuffer) -> AMPArgumentError {
        let bytes = buffer.readableBytesView.prefix(40)
        let shown = bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
            ? "'\(String(decoding: bytes, as: UTF8.self))'"
            : "0x" + bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        return AMPArgumentError(type: type, message: "invalid value \(shown)")
    }
}

extension AMPArgumentCodable {
    /// This value's encoding as a new buffer.
    public func ampEncoded() throws(AMPArgumentError) -> ByteBuffer {
        var buffer = ByteBuffer()
        try encodeAMPArgument(into: &buffer)
        return buffer
    }
}

// MARK: - Integer

extension Int: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(String(self))
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Int {
        // Fast path for the canonical form; everything else goes through Python's rules.
        let bytes = buffer.readableBytesView
        if !bytes.isEmpty, bytes.count <= 18, bytes.allSatisfy(PythonNumberSyntax.isDigit) {
            return bytes.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        let big = try AMPInteger.decodeAMPArgument(from: buffer)
        guard let value = Int(exactly: big) else {
            throw AMPArgumentError(type: "Integer", message: "\(big) does not fit in 64 bits")
        }
        return value
    }
}

// MARK: - Unicode

extension String: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(self)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> String {
        // Strict UTF-8, as Python's decoder: no surrogates, no overlong forms.
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
            throw .invalid("Unicode", buffer)
        }
        return text
    }
}

// MARK: - String (bytes)

extension ByteBuffer: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        var copy = self
        buffer.writeBuffer(&copy)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> ByteBuffer {
        buffer
    }
}

extension Data: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeBytes(self)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Data {
        Data(buffer.readableBytesView)
    }
}

// MARK: - Boolean

extension Bool: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeStaticString(self ? "True" : "False")
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Bool {
        let bytes = buffer.readableBytesView
        if bytes.elementsEqual("True".utf8) { return true }
        if bytes.elementsEqual("False".utf8) { return false }
        throw .invalid("Boolean", buffer)
    }
}

// MARK: - ListOf

extension Array: AMPArgumentCodable where Element: AMPArgumentCodable {
    /// `ListOf(T)`: each element's encoding behind a 2-byte big-endian length.
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        for element in self {
            let lengthIndex = buffer.writerIndex
            buffer.writeInteger(UInt16(0))
            try element.encodeAMPArgument(into: &buffer)
            let length = buffer.writerIndex - lengthIndex - 2
            guard length <= AMPLimits.maximumValueLength else {
                throw AMPArgumentError(type: "ListOf", message: "an element of \(length) bytes exceeds the limit of \(AMPLimits.maximumValueLength)")
            }
            buffer.setInteger(UInt16(length), at: lengthIndex)
        }
    }

    /// A truncated trailing element is dropped, as Twisted does.
    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> [Element] {
        var input = buffer
        var result: [Element] = []
        while let length = input.getInteger(at: input.readerIndex, as: UInt16.self),
              input.readableBytes >= 2 + Int(length) {
            input.moveReaderIndex(forwardBy: 2)
            result.append(try Element.decodeAMPArgument(from: input.readSlice(length: Int(length))!))
        }
        return result
    }
}

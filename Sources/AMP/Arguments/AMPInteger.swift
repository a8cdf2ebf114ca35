import NIOCore

/// An AMP `Integer` of any size, as Python's `int` is.
///
/// AMP only moves integers, it never computes with them, so this keeps the canonical
/// decimal text (no leading zeros, no `-0`) and converts to fixed-width integers on demand.
public struct AMPInteger: Sendable, Hashable, AMPTextValue, ExpressibleByIntegerLiteral {
    public let isNegative: Bool
    /// Decimal digits of the magnitude without leading zeros ("0" for zero).
    public let magnitude: String

    public init(_ value: some BinaryInteger) {
        isNegative = value < 0
        magnitude = String(value.magnitude)
    }

    public init(integerLiteral value: Int) {
        self.init(value)
    }

    /// Parses text the way Python's `int()` does (whitespace, a sign, `_` between digits).
    public init?(_ text: String) {
        guard let (negative, digits) = PythonNumberSyntax.parseInteger(text.utf8) else { return nil }
        isNegative = negative
        magnitude = String(decoding: digits, as: UTF8.self)
    }

    public var description: String { isNegative ? "-" + magnitude : magnitude }
}

extension AMPInteger: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        if isNegative { buffer.writeStaticString("-") }
        buffer.writeString(magnitude)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> AMPInteger {
        guard let (negative, digits) = PythonNumberSyntax.parseInteger(buffer.readableBytesView) else {
            throw .invalid("Integer", buffer)
        }
        return AMPInteger(isNegative: negative, magnitude: String(decoding: digits, as: UTF8.self))
    }

    private init(isNegative: Bool, magnitude: String) {
        self.isNegative = isNegative
        self.magnitude = magnitude
    }
}

extension FixedWidthInteger {
    /// The value of `integer` if it fits in this type.
    public init?(exactly integer: AMPInteger) {
        // Compare against the type's bounds as digit strings to avoid overflow traps.
        let bound = integer.isNegative ? String(Self.min.magnitude) : String(Self.max.magnitude)
        if integer.isNegative, !Self.isSigned, integer.magnitude != "0" { return nil }
        let digits = integer.magnitude
        guard digits.count < bound.count || (digits.count == bound.count && digits <= bound) else { return nil }
        var value: Self = 0
        for digit in digits.utf8 {
            let d = Self(digit - 0x30)
            value = integer.isNegative ? value * 10 - d : value * 10 + d
        }
        self = value
    }
}

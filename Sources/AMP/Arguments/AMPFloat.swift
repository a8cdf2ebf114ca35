import NIOCore

/// AMP `Float`: Python's `repr()` of a double on the wire, Python's `float()` when reading.
extension Double: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(pythonRepr)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> Double {
        guard let value = Double(pythonFloatLiteral: buffer.readableBytesView) else {
            throw .invalid("Float", buffer)
        }
        return value
    }

    /// Parses what Python's `float()` accepts: surrounding whitespace, a sign, `inf`,
    /// `infinity` or `nan` in any case, and decimal literals with `_` between digits
    /// (but not the hexadecimal floats Swift's own parser would take).
    init?(pythonFloatLiteral bytes: some Collection<UInt8>) {
        var text = PythonNumberSyntax.trimmed(bytes)
        var negative = false
        if let first = text.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            text = text.dropFirst()
        }
        let magnitude: Double
        if PythonNumberSyntax.equalsIgnoringCase(text, "inf") || PythonNumberSyntax.equalsIgnoringCase(text, "infinity") {
            magnitude = .infinity
        } else if PythonNumberSyntax.equalsIgnoringCase(text, "nan") {
            magnitude = .nan
        } else {
            guard let literal = PythonNumberSyntax.parseDecimalLiteral(text) else { return nil }
            var canonical = String(decoding: literal.integerDigits.isEmpty ? [0x30] : literal.integerDigits, as: UTF8.self)
            if !literal.fractionDigits.isEmpty {
                canonical += "." + String(decoding: literal.fractionDigits, as: UTF8.self)
            }
            canonical += "e\(literal.exponent)"
            guard let value = Double(canonical) else { return nil }
            magnitude = value
        }
        self = negative ? -magnitude : magnitude
    }

    /// Python's `repr(float)`: the shortest text that reads back to the same double,
    /// in positional notation for decimal exponents -4 ..< 16 and in scientific
    /// notation (`1e+16`, `1e-05`) outside them.
    var pythonRepr: String {
        if isNaN { return "nan" }
        if isInfinite { return self < 0 ? "-inf" : "inf" }
        let sign = sign == .minus ? "-" : ""
        if self == 0 { return sign + "0.0" }
        // Swift's description is also shortest-round-trip; only its layout differs.
        let (digits, pointPosition) = Self.shortestDigits(of: Swift.abs(self))
        if pointPosition <= -4 || pointPosition > 16 {
            let exponent = pointPosition - 1
            var mantissa = String(digits.first!)
            if digits.count > 1 { mantissa += "." + digits.dropFirst() }
            let exponentText = String(Swift.abs(exponent)).leftPadded(to: 2)
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + exponentText
        }
        if pointPosition <= 0 {
            return sign + "0." + String(repeating: "0", count: -pointPosition) + digits
        }
        if pointPosition < digits.count {
            let split = digits.index(digits.startIndex, offsetBy: pointPosition)
            return sign + digits[..<split] + "." + digits[split...]
        }
        return sign + digits + String(repeating: "0", count: pointPosition - digits.count) + ".0"
    }

    /// The significant digits of a positive finite double and the position of the
    /// decimal point relative to them (value = 0.DIGITS × 10^position).
    private static func shortestDigits(of value: Double) -> (String, Int) {
        let text = value.description
        var mantissa = Substring(text)
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exponent = Int(text[text.index(after: e)...]) ?? 0
        }
        let integerPart = mantissa.split(separator: ".", omittingEmptySubsequences: false).first ?? ""
        var digits = mantissa.filter { $0 != "." }
        var position = integerPart.count + exponent
        while digits.first == "0" {
            digits.removeFirst()
            position -= 1
        }
        while digits.last == "0" { digits.removeLast() }
        return (digits, position)
    }
}

import NIOCore

/// An AMP `Decimal`: a number in the General Decimal Arithmetic model that Python's
/// `decimal.Decimal` implements (sign, coefficient digits, exponent, or a special value).
///
/// AMP moves decimals without computing, so this keeps exactly what Python keeps:
/// `1.000` stays `1.000`, `-0` stays `-0`, NaN payloads survive. It is written with
/// Python's `str(Decimal)` ("to-scientific-string").
public struct AMPDecimal: Sendable, Hashable, AMPTextValue {
    public enum Kind: Sendable, Hashable {
        /// `coefficient × 10^exponent`.
        case finite(coefficient: String, exponent: Int)
        case infinity
        /// A quiet NaN with its diagnostic payload digits ("" for none).
        case nan(payload: String)
        /// A signalling NaN with its diagnostic payload digits ("" for none).
        case signalingNaN(payload: String)
    }

    public let isNegative: Bool
    public let kind: Kind

    public init(isNegative: Bool, kind: Kind) {
        self.isNegative = isNegative
        switch kind {
        case .finite(let coefficient, let exponent):
            let digits = coefficient.drop(while: { $0 == "0" })
            self.kind = .finite(coefficient: digits.isEmpty ? "0" : String(digits), exponent: exponent)
        case .nan(let payload):
            self.kind = .nan(payload: String(payload.drop(while: { $0 == "0" })))
        case .signalingNaN(let payload):
            self.kind = .signalingNaN(payload: String(payload.drop(while: { $0 == "0" })))
        case .infinity:
            self.kind = .infinity
        }
    }

    /// Parses what Python's `Decimal(str)` accepts.
    public init?(_ text: String) {
        guard let value = AMPDecimal(pythonDecimalLiteral: text.utf8) else { return nil }
        self = value
    }

    init?(pythonDecimalLiteral bytes: some Collection<UInt8>) {
        var text = PythonNumberSyntax.trimmed(bytes)
        var negative = false
        if let first = text.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            text = text.dropFirst()
        }
        if PythonNumberSyntax.equalsIgnoringCase(text, "inf") || PythonNumberSyntax.equalsIgnoringCase(text, "infinity") {
            self.init(isNegative: negative, kind: .infinity)
            return
        }
        for (prefix, signaling) in [("snan", true), ("nan", false)] where text.count >= prefix.count
            && PythonNumberSyntax.equalsIgnoringCase(text.prefix(prefix.count), prefix) {
            let payload = text.dropFirst(prefix.count)
            guard payload.allSatisfy(PythonNumberSyntax.isDigit) else { return nil }
            let digits = String(decoding: payload, as: UTF8.self)
            self.init(isNegative: negative, kind: signaling ? .signalingNaN(payload: digits) : .nan(payload: digits))
            return
        }
        guard let literal = PythonNumberSyntax.parseDecimalLiteral(text) else { return nil }
        let coefficient = String(decoding: literal.integerDigits + literal.fractionDigits, as: UTF8.self)
        let exponent = literal.exponent - literal.fractionDigits.count
        // Exponents are read up to ±10⁹ (PythonNumberSyntax clamps beyond). A value whose
        // written exponent would reach that would come back as another value, so it is
        // refused rather than changed in transit (found by fuzzing, amp-arguments).
        guard abs(literal.exponent) < Self.exponentLimit, abs(exponent + coefficient.count - 1) < Self.exponentLimit else { return nil }
        self.init(isNegative: negative, kind: .finite(coefficient: coefficient, exponent: exponent))
    }

    /// Exponents (as written, and adjusted) must stay below this in magnitude.
    static let exponentLimit = 999_999_999

    /// Python's `str(Decimal)`.
    public var description: String {
        let sign = isNegative ? "-" : ""
        switch kind {
        case .infinity:
            return sign + "Infinity"
        case .nan(let payload):
            return sign + "NaN" + payload
        case .signalingNaN(let payload):
            return sign + "sNaN" + payload
        case .finite(let coefficient, let exponent):
            let adjusted = exponent + coefficient.count - 1
            if exponent <= 0 && adjusted >= -6 {
                if exponent == 0 { return sign + coefficient }
                let integerDigits = coefficient.count + exponent
                if integerDigits > 0 {
                    let split = coefficient.index(coefficient.startIndex, offsetBy: integerDigits)
                    return sign + coefficient[..<split] + "." + coefficient[split...]
                }
                return sign + "0." + String(repeating: "0", count: -integerDigits) + coefficient
            }
            var mantissa = String(coefficient.first!)
            if coefficient.count > 1 { mantissa += "." + coefficient.dropFirst() }
            return sign + mantissa + "E" + (adjusted >= 0 ? "+" : "") + String(adjusted)
        }
    }

    public var isNaN: Bool {
        switch kind {
        case .nan, .signalingNaN: return true
        default: return false
        }
    }
}

extension AMPDecimal: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(description)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> AMPDecimal {
        guard let value = AMPDecimal(pythonDecimalLiteral: buffer.readableBytesView) else {
            throw .invalid("Decimal", buffer)
        }
        return value
    }
}

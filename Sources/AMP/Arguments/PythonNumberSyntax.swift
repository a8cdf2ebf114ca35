/// The number syntaxes Twisted's peers accept, because Twisted parses AMP numbers with
/// Python's `int()`, `float()` and `decimal.Decimal()`. We accept exactly what they
/// accept (pinned by `argument_parsing` in the golden vectors) and write only the
/// canonical forms.
enum PythonNumberSyntax {
    /// Python's `bytes.strip()` whitespace.
    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
    }

    static func isDigit(_ byte: UInt8) -> Bool {
        byte >= 0x30 && byte <= 0x39
    }

    static func trimmed(_ bytes: some Collection<UInt8>) -> ArraySlice<UInt8> {
        let array = Array(bytes)
        var start = array.startIndex
        var end = array.endIndex
        while start < end, isWhitespace(array[start]) { start += 1 }
        while end > start, isWhitespace(array[end - 1]) { end -= 1 }
        return array[start..<end]
    }

    /// Parses Python's `digitpart`: digits with single underscores between them.
    /// Returns the digits (underscores removed) and the index after them, or nil when
    /// there is no digit at `index` or an underscore is misplaced.
    static func digitPart(_ bytes: ArraySlice<UInt8>, from index: Int) -> (digits: [UInt8], end: Int)? {
        var digits: [UInt8] = []
        var i = index
        while i < bytes.endIndex {
            let byte = bytes[i]
            if isDigit(byte) {
                digits.append(byte)
                i += 1
            } else if byte == UInt8(ascii: "_"), !digits.isEmpty,
                      i + 1 < bytes.endIndex, isDigit(bytes[i + 1]) {
                i += 1
            } else {
                break
            }
        }
        return digits.isEmpty ? nil : (digits, i)
    }

    /// Python `int(bytes)`: optional whitespace, sign, digits with underscores.
    /// Returns the sign and the digits without leading zeros ("0" for zero).
    static func parseInteger(_ bytes: some Collection<UInt8>) -> (negative: Bool, digits: [UInt8])? {
        let text = trimmed(bytes)
        var i = text.startIndex
        var negative = false
        if i < text.endIndex, text[i] == UInt8(ascii: "-") || text[i] == UInt8(ascii: "+") {
            negative = text[i] == UInt8(ascii: "-")
            i += 1
        }
        guard let (digits, end) = digitPart(text, from: i), end == text.endIndex else { return nil }
        let significant = Array(digits.drop(while: { $0 == UInt8(ascii: "0") }))
        if significant.isEmpty { return (false, [UInt8(ascii: "0")]) }
        return (negative, significant)
    }

    /// Case-insensitive ASCII comparison against a lowercase word.
    static func equalsIgnoringCase(_ bytes: ArraySlice<UInt8>, _ lowercase: String) -> Bool {
        bytes.count == lowercase.utf8.count
            && zip(bytes, lowercase.utf8).allSatisfy { ($0 | 0x20) == $1 }
    }

    /// A decimal literal as Python's float() and Decimal() read it:
    /// `digits [. [digits]] | . digits`, then an optional exponent.
    struct DecimalLiteral {
        var integerDigits: [UInt8]
        var fractionDigits: [UInt8]
        var exponent: Int
    }

    static func parseDecimalLiteral(_ text: ArraySlice<UInt8>) -> DecimalLiteral? {
        var i = text.startIndex
        var integerDigits: [UInt8] = []
        var fractionDigits: [UInt8] = []
        if let (digits, end) = digitPart(text, from: i) {
            integerDigits = digits
            i = end
        }
        if i < text.endIndex, text[i] == UInt8(ascii: ".") {
            i += 1
            if let (digits, end) = digitPart(text, from: i) {
                fractionDigits = digits
                i = end
            }
        }
        guard !(integerDigits.isEmpty && fractionDigits.isEmpty) else { return nil }
        var exponent = 0
        if i < text.endIndex, text[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            var negative = false
            if i < text.endIndex, text[i] == UInt8(ascii: "-") || text[i] == UInt8(ascii: "+") {
                negative = text[i] == UInt8(ascii: "-")
                i += 1
            }
            guard let (digits, end) = digitPart(text, from: i) else { return nil }
            i = end
            // Clamp absurd exponents: beyond this every double is 0 or infinity and
            // every Decimal exponent is out of any sane range.
            var value = 0
            for digit in digits {
                value = min(value * 10 + Int(digit - 0x30), 1_000_000_000)
            }
            exponent = negative ? -value : value
        }
        guard i == text.endIndex else { return nil }
        return DecimalLiteral(integerDigits: integerDigits, fractionDigits: fractionDigits, exponent: exponent)
    }
}

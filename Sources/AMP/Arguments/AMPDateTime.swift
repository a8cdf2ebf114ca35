import Foundation
import NIOCore

/// An AMP `DateTime`: a wall-clock time with a fixed UTC offset, to the microsecond.
///
/// The wire form is always 32 characters, `YYYY-MM-DDTHH:MM:SS.ffffff±HH:MM`; a zero
/// offset is written `-00:00`, as Twisted does. There is no naive form: AMP cannot
/// carry a time without an offset.
public struct AMPDateTime: Sendable, Hashable, Codable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int
    public var microsecond: Int
    /// Offset from UTC in minutes (east positive), strictly within ±24 h.
    public var utcOffsetMinutes: Int

    /// Validates every field as Python's `datetime` does.
    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int,
                microsecond: Int = 0, utcOffsetMinutes: Int = 0) throws(AMPArgumentError) {
        func check(_ ok: Bool, _ what: String) throws(AMPArgumentError) {
            if !ok { throw AMPArgumentError(type: "DateTime", message: what) }
        }
        try check((1...9999).contains(year), "year \(year) is out of range")
        try check((1...12).contains(month), "month \(month) is out of range")
        try check((1...Self.daysIn(month: month, year: year)).contains(day), "day is out of range for month")
        try check((0...23).contains(hour), "hour \(hour) is out of range")
        try check((0...59).contains(minute), "minute \(minute) is out of range")
        try check((0...59).contains(second), "second \(second) is out of range")
        try check((0...999_999).contains(microsecond), "microsecond \(microsecond) is out of range")
        try check(abs(utcOffsetMinutes) < 24 * 60, "offset must be strictly between -24 and 24 hours")
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
        self.microsecond = microsecond
        self.utcOffsetMinutes = utcOffsetMinutes
    }

    /// The time `date` shows at `utcOffsetMinutes` (UTC by default).
    public init(_ date: Date, utcOffsetMinutes: Int = 0) {
        let totalMicroseconds = Int64((date.timeIntervalSince1970 * 1_000_000).rounded(.down)) + Int64(utcOffsetMinutes) * 60_000_000
        let (days, microsecondsOfDay) = totalMicroseconds.quotientAndFloorRemainder(dividingBy: 86_400_000_000)
        let (y, m, d) = Self.civil(fromDays: Int(days))
        let seconds = Int(microsecondsOfDay / 1_000_000)
        self.year = y
        self.month = m
        self.day = d
        self.hour = seconds / 3600
        self.minute = seconds / 60 % 60
        self.second = seconds % 60
        self.microsecond = Int(microsecondsOfDay % 1_000_000)
        self.utcOffsetMinutes = utcOffsetMinutes
    }

    /// The instant this names.
    public var date: Date {
        let days = Self.days(fromCivil: year, month, day)
        let seconds = Double(days * 86_400 + hour * 3600 + minute * 60 + second - utcOffsetMinutes * 60)
        return Date(timeIntervalSince1970: seconds + Double(microsecond) / 1_000_000)
    }

    /// The wire text, e.g. `2012-01-23T12:34:56.054321-01:23`.
    public var description: String {
        func pad(_ value: Int, _ width: Int) -> String { String(value).leftPadded(to: width) }
        let offset = abs(utcOffsetMinutes)
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))."
            + "\(pad(microsecond, 6))\(utcOffsetMinutes > 0 ? "+" : "-")\(pad(offset / 60, 2)):\(pad(offset % 60, 2))"
    }

    /// Parses the wire text as Twisted does: exactly 32 characters; each numeric field
    /// read with Python's `int()` at a fixed position; the separators between them are
    /// not checked (which is why a space instead of `T` is accepted).
    public init(wireText bytes: some Collection<UInt8>) throws(AMPArgumentError) {
        let text = Array(bytes)
        guard text.count == 32, text.allSatisfy({ $0 < 0x80 }) else {
            throw AMPArgumentError(type: "DateTime", message: "invalid date format '\(String(decoding: text, as: UTF8.self))'")
        }
        func field(_ range: Range<Int>) throws(AMPArgumentError) -> Int {
            guard let (negative, digits) = PythonNumberSyntax.parseInteger(text[range]), digits.count <= 9 else {
                throw AMPArgumentError(type: "DateTime", message: "invalid number '\(String(decoding: text[range], as: UTF8.self))'")
            }
            let value = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            return negative ? -value : value
        }
        let sign = text[26]
        guard sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else {
            throw AMPArgumentError(type: "DateTime", message: "invalid sign for timezone")
        }
        let offset = try field(27..<29) * 60 + field(30..<32)
        try self.init(year: field(0..<4), month: field(5..<7), day: field(8..<10),
                      hour: field(11..<13), minute: field(14..<16), second: field(17..<19),
                      microsecond: field(20..<26), utcOffsetMinutes: sign == UInt8(ascii: "-") ? -offset : offset)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        try self.init(wireText: text.utf8)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    // MARK: Calendar arithmetic (proleptic Gregorian, as Python's datetime)

    static func isLeap(_ year: Int) -> Bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

extension AMPDateTime: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(description)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> AMPDateTime {
        try AMPDateTime(wireText: buffer.readableBytesView)
    }
}

extension Int64 {
    fileprivate func quotientAndFloorRemainder(dividingBy divisor: Int64) -> (Int64, Int64) {
        var (q, r) = quotientAndRemainder(dividingBy: divisor)
        if r < 0 {
            q -= 1
            r += divisor
        }
        return (q, r)
    }
}

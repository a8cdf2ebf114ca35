import AMP
import Foundation
import NIOCore

/// Vertex's `AmpTime` argument: `YYYY-MM-DDTHH:MM:SS`, whole seconds, no zone.
/// The original wrote local time; we always write and read UTC.
public struct AmpTime: Hashable, Sendable, Comparable, AMPTextValue {
    /// The instant, in whole seconds.
    public let date: Date

    public init(_ date: Date) {
        self.date = Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
    }

    /// Parses the wire text (UTC).
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count == 19, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
              bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":") else { return nil }
        func field(_ range: Range<Int>) -> Int? {
            let digits = bytes[range]
            guard digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        guard let year = field(0..<4), let month = field(5..<7), let day = field(8..<10),
              let hour = field(11..<13), let minute = field(14..<16), let second = field(17..<19),
              let time = try? AMPDateTime(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
        else { return nil }
        self.init(time.date)
    }

    public var description: String {
        String(AMPDateTime(date).description.prefix(19))
    }

    public static func < (lhs: AmpTime, rhs: AmpTime) -> Bool { lhs.date < rhs.date }
}

extension AmpTime: AMPArgumentCodable {
    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeString(description)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> AmpTime {
        guard let value = AmpTime(String(buffer: buffer)) else {
            throw AMPArgumentError(type: "AmpTime", message: "expected YYYY-MM-DDTHH:MM:SS, got '\(String(buffer: buffer).prefix(64))'")
        }
        return value
    }
}

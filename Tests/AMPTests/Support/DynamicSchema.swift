import AMP
import Foundation
import NIOCore
import Q2Q

/// The vectors describe commands as JSON schemas with typed JSON values; this turns them
/// into our encoders' inputs and our decoders' outputs back into the same JSON form,
/// so every vector is checked through the library's own argument codecs.
indirect enum ArgumentType: Equatable, CustomStringConvertible {
    case integer, string, unicode, boolean, float, decimal, dateTime
    case hostPort, ampTime, q2qAddress
    case listOf(ArgumentType)
    case ampList([SchemaField])

    init(_ json: JSONValue) {
        self.init(name: json["type"].string!, fields: json["fields"])
    }

    init(name: String, fields: JSONValue = .null) {
        switch name {
        case "Integer": self = .integer
        case "String": self = .string
        case "Unicode": self = .unicode
        case "Boolean": self = .boolean
        case "Float": self = .float
        case "Decimal": self = .decimal
        case "DateTime": self = .dateTime
        case "HostPort": self = .hostPort
        case "AmpTime": self = .ampTime
        case "Q2QAddress": self = .q2qAddress
        case "AmpList": self = .ampList(fields.array.map(SchemaField.init))
        default:
            precondition(name.hasPrefix("ListOf(") && name.hasSuffix(")"), "unknown type \(name)")
            self = .listOf(ArgumentType(name: String(name.dropFirst(7).dropLast())))
        }
    }

    var description: String {
        switch self {
        case .integer: return "Integer"
        case .string: return "String"
        case .unicode: return "Unicode"
        case .boolean: return "Boolean"
        case .float: return "Float"
        case .decimal: return "Decimal"
        case .dateTime: return "DateTime"
        case .hostPort: return "HostPort"
        case .ampTime: return "AmpTime"
        case .q2qAddress: return "Q2QAddress"
        case .listOf(let element): return "ListOf(\(element))"
        case .ampList: return "AmpList"
        }
    }
}

struct SchemaField: Equatable {
    var key: String
    var type: ArgumentType
    var optional: Bool

    init(_ json: JSONValue) {
        key = json["key"].string!
        type = ArgumentType(json)
        optional = json["optional"].bool ?? false
    }
}

enum DynamicCodec {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Encodes a vector's typed JSON value.
    static func encode(_ type: ArgumentType, _ value: JSONValue) throws -> ByteBuffer {
        switch type {
        case .integer: return try AMPInteger(value.string!)!.ampEncoded()
        case .string: return ByteBuffer(bytes: Data(hex: value.string!))
        case .unicode: return try value.string!.ampEncoded()
        case .boolean: return try value.bool!.ampEncoded()
        case .float: return try Double(bitPattern: UInt64(value["bits"].string!, radix: 16)!).ampEncoded()
        case .decimal: return try AMPDecimal(value.string!)!.ampEncoded()
        case .dateTime: return try dateTime(fromISO: value["iso"].string!).ampEncoded()
        case .hostPort: return try HostPort(host: value["host"].string!, port: value["port"].int!).ampEncoded()
        case .ampTime: return try AmpTime(value.string!)!.ampEncoded()
        case .q2qAddress: return try Q2QAddress(value.string!).ampEncoded()
        case .listOf(let element):
            var buffer = ByteBuffer()
            for item in value.array {
                let encoded = try encode(element, item)
                buffer.writeInteger(UInt16(encoded.readableBytes))
                buffer.writeImmutableBuffer(encoded)
            }
            return buffer
        case .ampList(let fields):
            var buffer = ByteBuffer()
            for row in value.array {
                try box(fields: fields, values: row.array).serialize(into: &buffer)
            }
            return buffer
        }
    }

    /// A box of typed `{key, type, value}` entries (a vector's `arguments` or `values`).
    static func box(fields: [SchemaField], values: [JSONValue]) throws -> AMPBox {
        var box = AMPBox()
        for entry in values {
            let key = entry["key"].string!
            let field = fields.first { $0.key == key }!
            box.append(key: key, value: try encode(field.type, entry["value"]))
        }
        return box
    }

    /// Decodes bytes into the vectors' typed JSON form.
    static func decode(_ type: ArgumentType, _ buffer: ByteBuffer) throws -> JSONValue {
        switch type {
        case .integer: return .string(try AMPInteger.decodeAMPArgument(from: buffer).description)
        case .string: return .string(buffer.readableBytesView.hex)
        case .unicode: return .string(try String.decodeAMPArgument(from: buffer))
        case .boolean: return .bool(try Bool.decodeAMPArgument(from: buffer))
        case .float:
            let value = try Double.decodeAMPArgument(from: buffer)
            let bits = String(value.bitPattern, radix: 16)
            return .object(["text": .string(String(buffer: try value.ampEncoded())),
                            "bits": .string(String(repeating: "0", count: 16 - bits.count) + bits)])
        case .decimal: return .string(try AMPDecimal.decodeAMPArgument(from: buffer).description)
        case .dateTime:
            let value = try AMPDateTime.decodeAMPArgument(from: buffer)
            return .object(["iso": .string(isoFormat(value)), "utc_offset_seconds": .number(Double(value.utcOffsetMinutes * 60))])
        case .hostPort:
            let value = try HostPort.decodeAMPArgument(from: buffer)
            return .object(["host": .string(value.host), "port": .number(Double(value.port))])
        case .ampTime: return .string(try AmpTime.decodeAMPArgument(from: buffer).description)
        case .q2qAddress: return .string(try Q2QAddress.decodeAMPArgument(from: buffer).description)
        case .listOf(let element):
            // The library's ListOf framing, with each element through `decode`.
            let elements = try [ByteBuffer].decodeAMPArgument(from: buffer)
            return .array(try elements.map { try decode(element, $0) })
        case .ampList(let fields):
            return .array(try AMPBoxParser.boxes(in: buffer).map { .array(try values(fields: fields, in: $0)) })
        }
    }

    /// The typed values of `box` per the schema, in schema order; absent optionals left out.
    static func values(fields: [SchemaField], in box: AMPBox) throws -> [JSONValue] {
        try fields.compactMap { field in
            guard let value = box[field.key] else {
                if field.optional { return nil }
                throw Failure(description: "missing required key \(field.key)")
            }
            return .object(["key": .string(field.key), "type": .string(field.type.description),
                            "value": try decode(field.type, value)])
        }
    }

    /// Parses Python's `datetime.isoformat()` output.
    static func dateTime(fromISO iso: String) throws -> AMPDateTime {
        let chars = Array(iso)
        func number(_ from: Int, _ count: Int) -> Int { Int(String(chars[from..<from + count]))! }
        var index = 19
        var microsecond = 0
        if chars[index] == "." {
            microsecond = number(20, 6)
            index = 26
        }
        let sign = chars[index] == "-" ? -1 : 1
        let offset = sign * (number(index + 1, 2) * 60 + number(index + 4, 2))
        return try AMPDateTime(year: number(0, 4), month: number(5, 2), day: number(8, 2), hour: number(11, 2),
                               minute: number(14, 2), second: number(17, 2), microsecond: microsecond,
                               utcOffsetMinutes: offset)
    }

    static func isoFormat(_ value: AMPDateTime) -> String {
        func pad(_ v: Int, _ w: Int) -> String { String(repeating: "0", count: max(0, w - String(v).count)) + String(v) }
        var text = "\(pad(value.year, 4))-\(pad(value.month, 2))-\(pad(value.day, 2))T\(pad(value.hour, 2)):\(pad(value.minute, 2)):\(pad(value.second, 2))"
        if value.microsecond != 0 { text += "." + pad(value.microsecond, 6) }
        let offset = abs(value.utcOffsetMinutes)
        return text + (value.utcOffsetMinutes < 0 ? "-" : "+") + "\(pad(offset / 60, 2)):\(pad(offset % 60, 2))"
    }
}

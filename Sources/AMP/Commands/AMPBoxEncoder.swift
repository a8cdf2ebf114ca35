import Foundation
import NIOCore

/// Encodes a `Codable` struct as an AMP box: each stored property becomes one argument
/// whose wire key is its coding key. Leaves are ``AMPArgumentCodable`` values
/// (`[UInt8]` is AMP `String`); an array of structs is an `AmpList`; `nil` optionals are
/// left out, which is how AMP writes an absent optional argument.
public struct AMPBoxEncoder: Sendable {
    public init() {}

    public func encode<Value: Encodable>(_ value: Value) throws -> AMPBox {
        let encoder = BoxEncoding(codingPath: [])
        try value.encode(to: encoder)
        return encoder.box
    }
}

/// Decodes a `Codable` struct from an AMP box; the inverse of ``AMPBoxEncoder``.
/// Keys the type does not declare are ignored, as Twisted ignores them.
public struct AMPBoxDecoder: Sendable {
    public init() {}

    public func decode<Value: Decodable>(_ type: Value.Type, from box: AMPBox) throws -> Value {
        try Value(from: BoxDecoding(box: box, codingPath: []))
    }
}

/// What cannot be expressed in AMP: nested structs outside a list, lists of lists, …
public struct AMPCodingError: Error, Sendable, CustomStringConvertible {
    public var codingPath: String
    public var message: String

    init(_ path: [any CodingKey], _ message: String) {
        self.codingPath = path.map(\.stringValue).joined(separator: ".")
        self.message = message
    }

    public var description: String {
        codingPath.isEmpty ? message : "\(codingPath): \(message)"
    }
}

// MARK: - Leaves and lists of rows

/// Arrays of rows (`AmpList`), found at run time through conditional conformance.
protocol AMPEncodableRows {
    func encodeRows(codingPath: [any CodingKey]) throws -> ByteBuffer
}

protocol AMPDecodableRows {
    static func decodeRows(_ value: ByteBuffer, codingPath: [any CodingKey]) throws -> Self
}

extension Array: AMPEncodableRows where Element: Encodable {
    func encodeRows(codingPath: [any CodingKey]) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for row in self {
            let encoder = BoxEncoding(codingPath: codingPath)
            try row.encode(to: encoder)
            try encoder.box.serialize(into: &buffer)
        }
        return buffer
    }
}

extension Array: AMPDecodableRows where Element: Decodable {
    static func decodeRows(_ value: ByteBuffer, codingPath: [any CodingKey]) throws -> [Element] {
        try AMPBoxParser.boxes(in: value).map { try Element(from: BoxDecoding(box: $0, codingPath: codingPath)) }
    }
}

func encodeArgument<Value: Encodable>(_ value: Value, codingPath: @autoclosure () -> [any CodingKey]) throws -> ByteBuffer {
    // Concrete types first: comparing metatypes is far cheaper than a conformance lookup.
    if Value.self == AMPBytes.self {
        return (value as! AMPBytes).buffer
    }
    if Value.self == [UInt8].self {
        return ByteBuffer(bytes: value as! [UInt8])
    }
    if Value.self == Int.self {
        return try (value as! Int).ampEncoded()
    }
    if Value.self == String.self {
        return try (value as! String).ampEncoded()
    }
    if let leaf = value as? any AMPArgumentCodable {
        return try leaf.ampEncoded()
    }
    if let rows = value as? any AMPEncodableRows {
        return try rows.encodeRows(codingPath: codingPath())
    }
    throw AMPCodingError(codingPath(), "\(Value.self) is not an AMP argument type")
}

func decodeArgument<Value: Decodable>(_ type: Value.Type, from value: ByteBuffer, codingPath: @autoclosure () -> [any CodingKey]) throws -> Value {
    if type == AMPBytes.self {
        return AMPBytes(value) as! Value
    }
    if type == [UInt8].self {
        return Array(value.readableBytesView) as! Value
    }
    if type == Int.self {
        return try Int.decodeAMPArgument(from: value) as! Value
    }
    if type == String.self {
        return try String.decodeAMPArgument(from: value) as! Value
    }
    if let leaf = type as? any AMPArgumentCodable.Type {
        return try leaf.decodeAMPArgument(from: value) as! Value
    }
    if let rows = type as? any AMPDecodableRows.Type {
        return try rows.decodeRows(value, codingPath: codingPath()) as! Value
    }
    throw AMPCodingError(codingPath(), "\(Value.self) is not an AMP argument type")
}

// MARK: - Encoder

private final class BoxEncoding: Encoder {
    var box = AMPBox(reservingCapacity: 8)
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(codingPath: [any CodingKey]) {
        self.codingPath = codingPath
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(KeyedBoxEncoding<Key>(encoder: self))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        UnsupportedEncoding<AnyAMPCodingKey>(codingPath: codingPath, what: "a list where a struct was expected")
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        UnsupportedEncoding<AnyAMPCodingKey>(codingPath: codingPath, what: "a single value where a struct was expected")
    }
}

private struct KeyedBoxEncoding<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: BoxEncoding
    var codingPath: [any CodingKey] { encoder.codingPath }

    mutating func encodeNil(forKey key: Key) throws {}

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        let value = try encodeArgument(value, codingPath: codingPath + [key])
        encoder.box.append(key: key.stringValue, value: value)
    }

    // The common leaves, without the generic path's metatype checks and its detour
    // through the protocol's default implementations (a tenth of a busy caller's time
    // went to encoding one Int).
    mutating func encode(_ value: Int, forKey key: Key) throws {
        encoder.box.append(key: key.stringValue, value: ByteBuffer(string: String(value)))
    }

    mutating func encode(_ value: String, forKey key: Key) throws {
        encoder.box.append(key: key.stringValue, value: ByteBuffer(string: value))
    }

    mutating func encode(_ value: Bool, forKey key: Key) throws {
        encoder.box.append(key: key.stringValue, value: try value.ampEncoded())
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        KeyedEncodingContainer(UnsupportedEncoding<NestedKey>(codingPath: codingPath + [key], what: "a nested struct outside an AmpList"))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        UnsupportedEncoding<AnyAMPCodingKey>(codingPath: codingPath + [key], what: "a nested list container")
    }

    mutating func superEncoder() -> any Encoder { encoder }
    mutating func superEncoder(forKey key: Key) -> any Encoder { encoder }
}

/// Stands in for the container shapes AMP cannot express: every write throws, so a
/// wrongly shaped command fails to encode instead of trapping.
private struct UnsupportedEncoding<Key: CodingKey>: KeyedEncodingContainerProtocol, UnkeyedEncodingContainer, SingleValueEncodingContainer {
    let codingPath: [any CodingKey]
    let what: String
    var count: Int { 0 }

    init(codingPath: [any CodingKey], what: String) {
        self.codingPath = codingPath
        self.what = what
    }

    private func fail() -> AMPCodingError { AMPCodingError(codingPath, "AMP cannot encode \(what)") }

    mutating func encodeNil() throws { throw fail() }
    mutating func encode<T: Encodable>(_ value: T) throws { throw fail() }
    mutating func encodeNil(forKey key: Key) throws { throw fail() }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { throw fail() }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        KeyedEncodingContainer(UnsupportedEncoding<NestedKey>(codingPath: codingPath, what: what))
    }
    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        KeyedEncodingContainer(UnsupportedEncoding<NestedKey>(codingPath: codingPath, what: what))
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer { self }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer { self }
    mutating func superEncoder() -> any Encoder { FailingEncoder(codingPath: codingPath, what: what) }
    mutating func superEncoder(forKey key: Key) -> any Encoder { FailingEncoder(codingPath: codingPath, what: what) }
}

private struct FailingEncoder: Encoder {
    let codingPath: [any CodingKey]
    let what: String
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(UnsupportedEncoding<Key>(codingPath: codingPath, what: what))
    }
    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        UnsupportedEncoding<AnyAMPCodingKey>(codingPath: codingPath, what: what)
    }
    func singleValueContainer() -> any SingleValueEncodingContainer {
        UnsupportedEncoding<AnyAMPCodingKey>(codingPath: codingPath, what: what)
    }
}

struct AnyAMPCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

// MARK: - Decoder

private struct BoxDecoding: Decoder {
    let box: AMPBox
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(KeyedBoxDecoding<Key>(box: box, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        throw AMPCodingError(codingPath, "AMP commands are keyed structs")
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        throw AMPCodingError(codingPath, "AMP commands are keyed structs")
    }
}

private struct KeyedBoxDecoding<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let box: AMPBox
    let codingPath: [any CodingKey]

    var allKeys: [Key] { box.fields.compactMap { Key(stringValue: $0.key) } }

    func contains(_ key: Key) -> Bool { box[key.stringValue] != nil }

    func decodeNil(forKey key: Key) throws -> Bool { box[key.stringValue] == nil }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decodeArgument(type, from: try value(forKey: key), codingPath: codingPath + [key])
    }

    // The common leaves, as in the encoder.
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int {
        try Int.decodeAMPArgument(from: try value(forKey: key))
    }

    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        try String.decodeAMPArgument(from: try value(forKey: key))
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        try Bool.decodeAMPArgument(from: try value(forKey: key))
    }

    private func value(forKey key: Key) throws -> ByteBuffer {
        guard let value = box[key.stringValue] else {
            throw AMPCodingError(codingPath + [key], "missing required argument '\(key.stringValue)'")
        }
        return value
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        throw AMPCodingError(codingPath + [key], "AMP has no nested boxes outside AmpList")
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        throw AMPCodingError(codingPath + [key], "AMP lists are decoded as arrays")
    }

    func superDecoder() throws -> any Decoder { BoxDecoding(box: box, codingPath: codingPath) }
    func superDecoder(forKey key: Key) throws -> any Decoder { BoxDecoding(box: box, codingPath: codingPath) }
}

import Foundation
import NIOCore

/// One AMP box: an unordered set of key/value pairs.
///
/// Keys are text (every key AMP and Vertex use is ASCII); values are raw bytes. Pairs
/// keep arrival order so that "last one wins" for a duplicated key, as in Twisted,
/// which stores a received box into a dictionary. Lookups scan linearly: boxes hold a
/// handful of keys, and a scan over inline small strings beats hashing them.
public struct AMPBox: Sendable, Equatable {
    public struct Field: Sendable, Equatable {
        public var key: String
        public var value: ByteBuffer

        public init(key: String, value: ByteBuffer) {
            self.key = key
            self.value = value
        }
    }

    public private(set) var fields: [Field]
    /// True when `fields` are known to be in wire order with no key twice (a box built
    /// with `append(key:value:)`), so that serialising need not check.
    private var knownInWireOrder: Bool

    public init() {
        self.fields = []
        self.knownInWireOrder = true
    }

    init(reservingCapacity capacity: Int) {
        self.fields = []
        self.fields.reserveCapacity(capacity)
        self.knownInWireOrder = true
    }

    public init(_ fields: [Field]) {
        self.fields = fields
        self.knownInWireOrder = false
    }

    public init(_ pairs: KeyValuePairs<String, String>) {
        self.fields = pairs.map { Field(key: $0.key, value: ByteBuffer(string: $0.value)) }
        self.knownInWireOrder = false
    }

    public var isEmpty: Bool { fields.isEmpty }
    public var count: Int { fields.count }

    /// The value of `key`; for a key sent twice, the last one (Twisted's behaviour).
    public subscript(key: String) -> ByteBuffer? {
        get {
            var index = fields.endIndex
            while index > fields.startIndex {
                index -= 1
                if fields[index].key == key { return fields[index].value }
            }
            return nil
        }
        set {
            fields.removeAll { $0.key == key }
            if let newValue {
                fields.append(Field(key: key, value: newValue))
                knownInWireOrder = false
            }
        }
    }

    /// The value of `key` as text, decoded leniently; for reserved keys and messages.
    public func string(_ key: String) -> String? {
        self[key].map { String(buffer: $0) }
    }

    /// Adds a pair without looking for an existing one: the fast path for building a box
    /// whose keys are known to be distinct (an encoder's output). The pair goes where it
    /// keeps the keys in wire order, so that serialising needs no sort.
    public mutating func append(key: String, value: ByteBuffer) {
        var index = fields.endIndex
        while index > fields.startIndex, Self.precedesBytewise(key, fields[index - 1].key) {
            index -= 1
        }
        // Every key after `index` follows this one; the one before may equal it.
        if index > fields.startIndex, fields[index - 1].key == key { knownInWireOrder = false }
        fields.insert(Field(key: key, value: value), at: index)
    }

    public mutating func append(key: String, string: String) {
        append(key: key, value: ByteBuffer(string: string))
    }

    /// Keys with their last values, in wire order (sorted bytewise), as Twisted writes them.
    var canonicalFields: [Field] {
        // Usually already in order with no key twice (see `append`): nothing to do.
        if knownInWireOrder || zip(fields, fields.dropFirst()).allSatisfy({ Self.precedesBytewise($0.key, $1.key) }) {
            return fields
        }
        var unique: [Field] = []
        unique.reserveCapacity(fields.count)
        for field in fields.reversed() where !unique.contains(where: { $0.key == field.key }) {
            unique.append(field)
        }
        unique.sort { Self.precedesBytewise($0.key, $1.key) }
        return unique
    }

    /// Bytewise order of the UTF-8 keys, the order Twisted writes them in.
    static func precedesBytewise(_ a: String, _ b: String) -> Bool {
        let fast = a.utf8.withContiguousStorageIfAvailable { a in
            b.utf8.withContiguousStorageIfAvailable { b in
                let common = Swift.min(a.count, b.count)
                let order = common == 0 ? 0 : memcmp(a.baseAddress!, b.baseAddress!, common)
                return order != 0 ? order < 0 : a.count < b.count
            }
        }
        return (fast ?? nil) ?? a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    public static func == (lhs: AMPBox, rhs: AMPBox) -> Bool {
        lhs.canonicalFields == rhs.canonicalFields
    }
}

extension AMPBox: CustomStringConvertible {
    public var description: String {
        let inner = canonicalFields.map { field -> String in
            let bytes = field.value.readableBytesView
            let printable = bytes.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
            let shown = printable
                ? "\"\(String(decoding: bytes.prefix(64), as: UTF8.self))\""
                : "0x" + bytes.prefix(32).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
            let ellipsis = bytes.count > (printable ? 64 : 32) ? "…(\(bytes.count) bytes)" : ""
            return "\(field.key)=\(shown)\(ellipsis)"
        }
        return "AMPBox(" + inner.joined(separator: ", ") + ")"
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

import AMP
import Foundation
import NIOCore

extension FuzzTarget {
    /// The box parser, fed in chunks the input chooses, under a limit it chooses: every
    /// box it gives has keys and values within AMP's limits, re-serialises and parses
    /// back to itself; it never holds more of a box than its limit.
    static let ampBox = FuzzTarget("amp-box", "AMP box parser (a stream of boxes, in chunks)") { input in
        let limits = AMPLimits(maximumBoxSize: 4 + AMPLimits.maximumKeyLength + AMPLimits.maximumValueLength + 2 + Int(input.uint16()))
        let chunkSize = 1 + Int(input.byte())
        var parser = AMPBoxParser(limits: limits)
        var buffer = ByteBuffer()
        var stream = input.rest()[...]
        feeding: while !stream.isEmpty {
            buffer.writeBytes(stream.prefix(chunkSize))
            stream = stream.dropFirst(chunkSize)
            while true {
                let box: AMPBox?
                do { box = try parser.nextBox(from: &buffer) } catch { break feeding }
                require(parser.bufferedBoxBytes <= limits.maximumBoxSize, "\(parser.bufferedBoxBytes) bytes held past a limit of \(limits.maximumBoxSize)")
                guard let box else { break }
                checkRoundTrip(box, limits: limits)
            }
        }
    }

    static func checkRoundTrip(_ box: AMPBox, limits: AMPLimits) {
        for field in box.fields {
            require(!field.key.isEmpty, "an empty key in a parsed box")
            require(field.value.readableBytes <= AMPLimits.maximumValueLength, "a value of \(field.value.readableBytes) bytes")
        }
        // A key that was not UTF-8 is read with replacement characters, which may make it
        // longer than AMP allows: such a box is refused when written, never mangled.
        let writable = box.fields.allSatisfy { $0.key.utf8.count <= AMPLimits.maximumKeyLength }
        var wire = ByteBuffer()
        do {
            try box.serialize(into: &wire)
        } catch {
            require(!writable, "a parsed box does not serialise: \(error)")
            return
        }
        let again = try? AMPBoxParser.boxes(in: wire, limits: limits)
        require(again == [box], "a box does not survive serialise → parse: \(box)")
    }

    /// Every AMP argument type: a value that decodes re-encodes to bytes that decode to
    /// the same value, and encoding what was decoded is stable.
    static let ampArguments = FuzzTarget("amp-arguments", "AMP argument decoders (Integer, Float, Decimal, DateTime, Boolean, String, Bytes, ListOf)") { input in
        let selector = input.byte()
        let value = ByteBuffer(bytes: input.rest())
        switch selector % 10 {
        case 0: checkArgument(Int.self, value)
        case 1: checkArgument(AMPInteger.self, value)
        case 2: checkArgument(Double.self, value, same: { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) })
        case 3: checkArgument(AMPDecimal.self, value)
        case 4: checkArgument(AMPDateTime.self, value)
        case 5: checkArgument(Bool.self, value)
        case 6: checkArgument(String.self, value)
        case 7: checkArgument(AMPBytes.self, value)
        case 8: checkArgument([AMPInteger].self, value)
        default: checkArgument([String].self, value)
        }
    }

    static func checkArgument<Value: AMPArgumentCodable & Equatable>(_ type: Value.Type, _ bytes: ByteBuffer) {
        checkArgument(type, bytes, same: ==)
    }

    static func checkArgument<Value: AMPArgumentCodable>(_ type: Value.Type, _ bytes: ByteBuffer, same: (Value, Value) -> Bool) {
        guard let value = try? Value.decodeAMPArgument(from: bytes) else { return }
        var encoded = ByteBuffer()
        do { try value.encodeAMPArgument(into: &encoded) } catch {
            // Only a list whose elements grew past AMP's value length may fail to encode.
            require(Value.self is any Collection.Type, "\(Value.self) decoded from \(Array(bytes.readableBytesView)) does not encode: \(error)")
            return
        }
        guard let again = try? Value.decodeAMPArgument(from: encoded) else {
            fail("\(Value.self) \(value) encodes to \(Array(encoded.readableBytesView)), which does not decode")
        }
        require(same(value, again), "\(Value.self) \(value) comes back as \(again)")
        var encodedAgain = ByteBuffer()
        try? again.encodeAMPArgument(into: &encodedAgain)
        require(encoded == encodedAgain, "\(Value.self) \(value) encodes differently the second time")
    }
}

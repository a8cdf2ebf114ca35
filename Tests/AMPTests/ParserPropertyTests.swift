@testable import AMP
import Foundation
import NIOCore
import Testing
import VertexTestSupport

/// Property and fuzz tests of the box parser and the argument decoders: on any input
/// they return boxes or a typed error, never crash, and never hold more than the limit.
@Suite("Parser properties and fuzzing")
struct ParserPropertyTests {
    static func randomBox(_ rng: inout SplitMix64) -> AMPBox {
        var box = AMPBox()
        for k in 0..<Int.random(in: 0...8, using: &rng) {
            let keyLength = Int.random(in: 1...20, using: &rng)
            let key = "k\(k)" + String((0..<keyLength).map { _ in Character(UnicodeScalar(UInt8.random(in: 0x21...0x7E, using: &rng))) })
            let valueLength = Int.random(in: 0...(Bool.random(using: &rng) ? 40 : 3000), using: &rng)
            box[key] = ByteBuffer(bytes: (0..<valueLength).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
        return box
    }

    /// Feeds `bytes` to a parser in random chunks; returns the boxes or the first error.
    static func parseInChunks(_ bytes: [UInt8], limits: AMPLimits, _ rng: inout SplitMix64) -> (boxes: [AMPBox], error: AMPFramingError?, maxHeld: Int) {
        var parser = AMPBoxParser(limits: limits)
        var buffer = ByteBuffer()
        var boxes: [AMPBox] = []
        var offset = 0
        var maxHeld = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, Int.random(in: 1...700, using: &rng))
            buffer.writeBytes(bytes[offset..<offset + chunk])
            offset += chunk
            do {
                while let box = try parser.nextBox(from: &buffer) { boxes.append(box) }
            } catch {
                return (boxes, error, maxHeld)
            }
            maxHeld = max(maxHeld, parser.bufferedBoxBytes)
        }
        return (boxes, nil, maxHeld)
    }

    @Test("random boxes survive serialise → parse in random chunks", arguments: 0..<20)
    func roundTrip(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let boxes = (0..<30).map { _ in Self.randomBox(&rng) }.filter { !$0.isEmpty }
        var wire = ByteBuffer()
        for box in boxes { try box.serialize(into: &wire) }
        let result = Self.parseInChunks(Array(wire.readableBytesView), limits: .default, &rng)
        #expect(result.error == nil)
        #expect(result.boxes == boxes)
    }

    @Test("mutated and random streams give boxes or a framing error, within the limit", arguments: 0..<40)
    func mutatedStreams(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let limits = AMPLimits(maximumBoxSize: 70_000)
        var wire = ByteBuffer()
        for _ in 0..<10 { try Self.randomBox(&rng).serialize(into: &wire) }
        var bytes = Array(wire.readableBytesView)
        if seed % 4 == 0 {
            bytes = (0..<Int.random(in: 0...5000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        } else {
            for _ in 0..<Int.random(in: 1...20, using: &rng) where !bytes.isEmpty {
                let index = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[index] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes.remove(at: index)
                default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: index)
                }
            }
        }
        let result = Self.parseInChunks(bytes, limits: limits, &rng)
        #expect(result.maxHeld <= limits.maximumBoxSize)
        for box in result.boxes {
            for field in box.fields {
                #expect(!field.key.isEmpty && field.key.utf8.count <= AMPLimits.maximumKeyLength)
                #expect(field.value.readableBytes <= AMPLimits.maximumValueLength)
            }
        }
    }

    @Test("tags travel as lowercase hex without leading zeros, and come back (seeded property)")
    func tagsRoundTrip() throws {
        var rng = SplitMix64(seed: 16)
        let edges = [1, 9, 10, 15, 16, 255, 256, (1 << 60) - 1]
        for round in 0..<5_000 {
            let tag = round < edges.count ? edges[round] : Int.random(in: 1..<(1 << Int.random(in: 1...60, using: &rng)), using: &rng)
            // As a request carries it.
            let request = try AMPBox().serializedRequest(command: "Echo", tag: tag, allocator: ByteBufferAllocator())
            let wire = try #require(try AMPBoxParser.boxes(in: request).first?["_ask"], "tag \(tag)")
            #expect(String(buffer: wire) == String(tag, radix: 16), "tag \(tag)")
            #expect(AMPChannelHandler.parseTag(wire) == tag, "tag \(tag)")
        }
    }

    @Test("a request is written as the box with _ask and _command appended would be (seeded property)")
    func requestSerialisation() throws {
        var rng = SplitMix64(seed: 17)
        // Keys that sort just before, between and after the reserved ones, and the
        // reserved ones themselves (which ours must replace).
        let near = ["A", "Z", "_", "_a", "_ask", "_b", "_command", "_commandz", "`", "a", "\u{7F}", "é"]
        for _ in 0..<3_000 {
            var arguments = Self.randomBox(&rng)
            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                arguments.append(key: near.randomElement(using: &rng)!, string: "v\(Int.random(in: 0...9, using: &rng))")
            }
            let command = ["Echo", "", String(repeating: "c", count: Int.random(in: 1...300, using: &rng))].randomElement(using: &rng)!
            let tag: Int? = Bool.random(using: &rng) ? nil : Int.random(in: 1..<(1 << Int.random(in: 1...60, using: &rng)), using: &rng)

            var expected = arguments
            expected.append(key: "_command", string: command)
            if let tag { expected.append(key: "_ask", string: String(tag, radix: 16)) }
            var written = ByteBuffer(string: "prefix")
            try arguments.serializeRequest(into: &written, command: command, tag: tag)
            #expect(written.readString(length: 6) == "prefix")
            #expect(Array(written.readableBytesView) == Array(try expected.serialized().readableBytesView), "\(expected)")
        }
    }

    @Test("a request whose command name is too long is refused before any byte is written")
    func requestTooLong() {
        var written = ByteBuffer()
        #expect(throws: AMPSerializationError.valueTooLong(key: "_command", length: 65_536)) {
            try AMPBox().serializeRequest(into: &written, command: String(repeating: "c", count: 65_536), tag: 1)
        }
        #expect(written.readableBytes == 0)
    }

    @Test("a box growing past the limit is refused before it is complete")
    func boxLimit() throws {
        var parser = AMPBoxParser(limits: AMPLimits(maximumBoxSize: 70_000))
        var buffer = ByteBuffer()
        for key in ["a", "b"] {
            buffer.writeInteger(UInt16(1))
            buffer.writeString(key)
            buffer.writeInteger(UInt16(65535))
            buffer.writeRepeatingByte(0x78, count: 65535)
        }
        #expect(throws: AMPFramingError.boxTooLarge(limit: 70_000)) {
            while try parser.nextBox(from: &buffer) != nil {}
        }
    }

    @Test("argument decoders never crash on random bytes", arguments: 0..<10)
    func argumentFuzz(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let alphabet = Array("0123456789+-_.eEinfatyINFAYT: \t\n-".utf8) + [0x00, 0xFF, 0xC3]
        for _ in 0..<2000 {
            let length = Int.random(in: 0...40, using: &rng)
            let bytes = (0..<length).map { _ in
                Bool.random(using: &rng) ? alphabet.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            }
            let buffer = ByteBuffer(bytes: bytes)
            _ = try? Int.decodeAMPArgument(from: buffer)
            _ = try? AMPInteger.decodeAMPArgument(from: buffer)
            _ = try? Double.decodeAMPArgument(from: buffer)
            _ = try? AMPDecimal.decodeAMPArgument(from: buffer)
            _ = try? AMPDateTime.decodeAMPArgument(from: buffer)
            _ = try? Bool.decodeAMPArgument(from: buffer)
            _ = try? String.decodeAMPArgument(from: buffer)
            _ = try? [AMPInteger].decodeAMPArgument(from: buffer)
            _ = try? AMPBoxParser.boxes(in: buffer)
        }
        // Values that decode re-encode to text that decodes to the same value.
        for _ in 0..<2000 {
            let value = Double(bitPattern: rng.next())
            let text = try! value.ampEncoded()
            let back = try! Double.decodeAMPArgument(from: text)
            #expect(back.bitPattern == value.bitPattern || (back.isNaN && value.isNaN))
        }
    }
}

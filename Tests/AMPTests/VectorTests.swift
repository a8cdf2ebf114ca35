import AMP
import Foundation
import NIOCore
import Testing

/// Every golden vector in ../shared/vectors/amp.json, produced by real Twisted.
@Suite("Golden vectors (Twisted 26.10)")
struct VectorTests {
    static let commands = SharedFiles.vectors["commands"]

    static func schema(_ command: String, _ part: String) -> [SchemaField] {
        commands[command][part].array.map(SchemaField.init)
    }

    static func parseSingleBox(_ hex: String) throws -> AMPBox {
        var buffer = ByteBuffer(bytes: Data(hex: hex))
        var parser = AMPBoxParser()
        let box = try #require(try parser.nextBox(from: &buffer))
        #expect(buffer.readableBytes == 0)
        return box
    }

    /// Top-level AmpList entries carry their schema as `fields`; the values are the rest.
    static func values(_ entries: JSONValue) -> [JSONValue] {
        entries.array.map { entry in
            guard case .object(var object) = entry else { return entry }
            object["fields"] = nil
            return .object(object)
        }
    }

    static func expectBoxesMatch(_ box: AMPBox, _ expected: JSONValue) {
        let pairs = expected.array.first!.array.map { ($0.array[0].string!, $0.array[1].string!) }
        let ours = box.fields.map { ($0.key, $0.value.readableBytesView.hex) }
        #expect(ours.map(\.0) == pairs.map(\.0))
        #expect(ours.map(\.1) == pairs.map(\.1))
    }

    @Test("good exchange", arguments: SharedFiles.vectorNames("good"))
    func goodExchange(name: String) throws {
        let vector = SharedFiles.vector("good", named: name)
        let command = vector["command"].string!
        let request = vector["request"]

        // Parse Twisted's request bytes; decode every argument; re-encode byte-exactly.
        let box = try Self.parseSingleBox(request["hex"].string!)
        Self.expectBoxesMatch(box, request["boxes"])
        let arguments = Self.schema(command, "arguments")
        #expect(try DynamicCodec.values(fields: arguments, in: box) == Self.values(request["arguments"]))
        var built = try DynamicCodec.box(fields: arguments, values: request["arguments"].array)
        built.append(key: "_command", string: command)
        if let ask = request["ask"].string { built.append(key: "_ask", string: ask) }
        #expect(try built.serialized().readableBytesView.hex == request["hex"].string!)

        let response = vector["response"]
        guard !response.isNull else { return }
        let answer = try Self.parseSingleBox(response["hex"].string!)
        Self.expectBoxesMatch(answer, response["boxes"])
        var rebuilt: AMPBox
        if response["kind"].string == "answer" {
            let fields = Self.schema(command, "response")
            #expect(try DynamicCodec.values(fields: fields, in: answer) == Self.values(response["values"]))
            rebuilt = try DynamicCodec.box(fields: fields, values: response["values"].array)
            rebuilt.append(key: "_answer", string: response["tag"].string!)
        } else {
            rebuilt = AMPBox()
            rebuilt.append(key: "_error", string: response["tag"].string!)
            rebuilt.append(key: "_error_code", string: response["error_code"].string!)
            rebuilt.append(key: "_error_description", string: response["error_description"].string!)
        }
        #expect(try rebuilt.serialized().readableBytesView.hex == response["hex"].string!)
    }

    @Test("argument encoding", arguments: Array(SharedFiles.vectorList("argument_encodings").indices))
    func argumentEncoding(index: Int) throws {
        let vector = SharedFiles.vectorList("argument_encodings")[index]
        let type = ArgumentType(vector)
        let encoded = try DynamicCodec.encode(type, vector["value"])
        #expect(encoded.readableBytesView.hex == vector["encoded_hex"].string!, "\(vector)")
        let decoded = try DynamicCodec.decode(type, ByteBuffer(bytes: Data(hex: vector["encoded_hex"].string!)))
        #expect(decoded == vector["decoded"], "\(vector)")
    }

    @Test("argument parsing", arguments: Array(SharedFiles.vectorList("argument_parsing").indices))
    func argumentParsing(index: Int) throws {
        let vector = SharedFiles.vectorList("argument_parsing")[index]
        var type = ArgumentType(vector)
        if type == .ampList([]) {
            // These rows are read with the schema of the AmpList encodings: (a Integer, b Unicode optional).
            let encoding = SharedFiles.vectorList("argument_encodings").first { $0["type"].string == "AmpList" }!
            type = ArgumentType(encoding)
        }
        let input = ByteBuffer(bytes: Data(hex: vector["input_hex"].string!))
        if vector["accepted"].bool == true {
            #expect(try DynamicCodec.decode(type, input) == vector["value"], "\(vector)")
        } else {
            #expect(throws: (any Error).self, "\(vector)") { try DynamicCodec.decode(type, input) }
        }
    }

    @Test("Twisted's first 20 _ask tags")
    func askTags() async throws {
        let expected = SharedFiles.vectors["ask_tags_first_20"].array.map { $0.string! }
        let tags = try await RawPeer.recordAskTags(count: expected.count)
        #expect(tags == expected)
    }

    @Test("pipelined stream: answers matched by tag, reversed, byte by byte")
    func pipelinedStream() async throws {
        let vector = SharedFiles.vectorList("streams")[0]
        let results = try await RawPeer.pipelinedOptionalCalls(
            answers: Data(hex: vector["answers_reversed_stream_hex"].string!))
        #expect(results.requestStream.hex == vector["request_stream_hex"].string!)
        #expect(results.completionOrder == vector["client_results_in_completion_order"].array.map { $0.string! })
    }

    @Test("encoding limits")
    func encodeLimits() throws {
        func box(_ key: String, _ length: Int) -> AMPBox {
            AMPBox([.init(key: key, value: ByteBuffer(repeating: 0x61, count: length))])
        }
        #expect(throws: AMPSerializationError.valueTooLong(key: "v", length: 65536)) { try box("v", 65536).serialized() }
        let maxValue = try box("v", 65535).serialized()
        let expectedLength = UInt32(SharedFiles.vector("encode_limits", named: "value-65535")["output_hex"].string!, radix: 16)!
        #expect(maxValue.readableBytes == Int(expectedLength))
        let longKey = String(repeating: "k", count: 256)
        #expect(throws: AMPSerializationError.keyTooLong(key: longKey, length: 256)) { try box(longKey, 1).serialized() }
        var key255 = AMPBox()
        key255.append(key: String(repeating: "k", count: 255), string: "v")
        let expected255 = SharedFiles.vector("encode_limits", named: "key-255")["output_hex"].string!
        #expect(try key255.serialized().readableBytesView.hex == expected255)
        #expect(throws: AMPSerializationError.emptyKey) { try box("", 1).serialized() }

        // A ListOf whose whole encoding is too long cannot be sent.
        let list = Array(repeating: String(repeating: "x", count: 1000), count: 70)
        var tooLong = AMPBox()
        tooLong.append(key: "texts", value: try list.ampEncoded())
        #expect(throws: AMPSerializationError.self) { try tooLong.serialized() }
    }

    @Test("however a box is built, it goes out in wire order with each key once, the last value winning")
    func wireOrder() throws {
        let expected = try AMPBox(["a": "3", "b": "2", "c": "4"]).serialized()
        var appended = AMPBox()
        appended.append(key: "b", value: ByteBuffer(string: "2"))
        appended.append(key: "a", value: ByteBuffer(string: "1"))
        appended.append(key: "a", value: ByteBuffer(string: "3"))   // the same key again: the last wins
        appended.append(key: "c", value: ByteBuffer(string: "4"))
        #expect(try appended.serialized() == expected)
        var mixed = AMPBox()
        mixed.append(key: "c", string: "4")
        mixed.append(key: "a", value: ByteBuffer(string: "3"))
        mixed["b"] = ByteBuffer(string: "2")
        #expect(try mixed.serialized() == expected)
        #expect(try AMPBox([.init(key: "c", value: ByteBuffer(string: "4")), .init(key: "b", value: ByteBuffer(string: "2")),
                            .init(key: "a", value: ByteBuffer(string: "3"))]).serialized() == expected)
        #expect(expected.readableBytesView.hex == "000161000133000162000132000163000134" + "0000")
    }
}

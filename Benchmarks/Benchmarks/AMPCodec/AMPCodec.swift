// Throughput of the AMP codec without sockets: boxes encoded and decoded per second,
// raw and through Codable commands. Run: (cd Benchmarks && swift package benchmark)
import AMP
import Benchmark
import NIOCore

struct EchoArguments: Codable, Sendable {
    var payload: AMPBytes
    var n: Int
    var name: String
    var ok: Bool
}

let arguments = EchoArguments(payload: AMPBytes([UInt8](repeating: 0x61, count: 128)), n: 42, name: "alice@example.com", ok: true)

func requestBox() throws -> AMPBox {
    var box = try AMPBoxEncoder().encode(arguments)
    box.append(key: "_command", string: "Echo")
    box.append(key: "_ask", string: "a")
    return box
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.throughput, .wallClock, .mallocCountTotal], maxDuration: .seconds(2))

    Benchmark("serialize box (6 keys, 128 B payload)") { benchmark in
        let box = try requestBox()
        var buffer = ByteBuffer()
        for _ in benchmark.scaledIterations {
            buffer.clear()
            try box.serialize(into: &buffer)
            blackHole(buffer)
        }
    }

    Benchmark("parse box (6 keys, 128 B payload)") { benchmark in
        let wire = try requestBox().serialized()
        for _ in benchmark.scaledIterations {
            var parser = AMPBoxParser()
            var input = wire
            blackHole(try parser.nextBox(from: &input))
        }
    }

    Benchmark("encode Codable arguments to a box") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try AMPBoxEncoder().encode(arguments))
        }
    }

    Benchmark("decode Codable arguments from a box") { benchmark in
        let box = try requestBox()
        for _ in benchmark.scaledIterations {
            blackHole(try AMPBoxDecoder().decode(EchoArguments.self, from: box))
        }
    }

    Benchmark("parse 100 pipelined boxes from one buffer") { benchmark in
        var wire = ByteBuffer()
        for _ in 0..<100 { try requestBox().serialize(into: &wire) }
        for _ in benchmark.scaledIterations {
            var parser = AMPBoxParser()
            var input = wire
            var count = 0
            while try parser.nextBox(from: &input) != nil { count += 1 }
            precondition(count == 100)
        }
    }
}

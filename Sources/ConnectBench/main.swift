// connect-bench: how long `Q2QNode.connect` takes to a first echoed byte, for
// scripts/bench/connect-latency (which runs it on a netlab link of known RTT).
//
//   connect-bench --home DIR --from ADDRESS --to ADDRESS --service NAME
//                 [--method auto|tcp|relay] [--rounds N]
//
// Round 1 is cold: the node has no connection to the presence server yet (TCP, TLS,
// identify and secure come first). Later rounds reuse the cached presence connection,
// as a running node does. Each round connects, writes one byte, reads it back, and
// closes. Prints "cold_ms=…" and "warm_ms=…" (the median of the warm rounds).
import Foundation
import NIOCore
import Q2Q

func option(_ name: String) -> String? {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func required(_ name: String) -> String {
    guard let value = option(name) else {
        FileHandle.standardError.write(Data("connect-bench: \(name) is required\n".utf8))
        exit(2)
    }
    return value
}

let home = URL(fileURLWithPath: required("--home"))
let from = try Q2QAddress(required("--from"))
let to = try Q2QAddress(required("--to"))
let service = required("--service")
let rounds = max(2, Int(option("--rounds") ?? "7") ?? 7)
let methods: Q2QMethodPolicy = switch option("--method") ?? "auto" {
case "tcp": .tcp
case "relay": .relay
default: .auto
}

let node = try Q2QNode(home: home)
var milliseconds: [Double] = []
for _ in 0..<rounds {
    let start = ContinuousClock.now
    let stream = try await node.connect(from: from, to: to, service: service, methods: methods)
    let echoed = try await stream.channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(bytes: [0x2A]))
        var iterator = inbound.makeAsyncIterator()
        return try await iterator.next()?.readableBytes ?? 0
    }
    let elapsed = ContinuousClock.now - start
    guard echoed > 0 else {
        FileHandle.standardError.write(Data("connect-bench: nothing echoed\n".utf8))
        exit(1)
    }
    milliseconds.append(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
    FileHandle.standardError.write(Data("round \(milliseconds.count): \(String(format: "%.1f", milliseconds.last!)) ms by \(stream.method)\n".utf8))
}
await node.shutdown()
let warm = milliseconds.dropFirst().sorted()
print(String(format: "cold_ms=%.1f", milliseconds[0]))
print(String(format: "warm_ms=%.1f", warm[warm.count / 2]))

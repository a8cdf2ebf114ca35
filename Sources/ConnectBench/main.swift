// connect-bench: how long `Q2QNode.connect` takes, for scripts/bench/connect-latency
// and scripts/bench/nat-matrix (which run it on netlab links of known RTT).
//
//   connect-bench --home DIR --from ADDRESS --to ADDRESS --service NAME
//                 [--method auto|tcp|ptcp|rptcp|relay|…] [--rounds N] [--greeting]
//                 [--bytes N] [--keep-going] [--no-remembered-paths]
//
// Round 1 is cold: the node has no connection to the presence server yet (TCP, TLS,
// identify and secure come first). Later rounds reuse the cached presence connection,
// as a running node does, and by default also the tcp path that won the round before
// (--no-remembered-paths: every round asks the presence server first, as a first
// connection to a peer does). Each round connects, then:
//   - with --greeting, reads the first bytes the service sends unasked (time to first
//     byte: from the connect call to the listener's first bytes arriving);
//   - echoes one byte (or, with --bytes, N pseudo-random bytes, checked), and closes.
// Prints per round to stderr, and to stdout: cold_ms, warm_ms (median of the warm
// rounds to the echoed bytes), first_byte_ms (median of warm rounds, with --greeting),
// ok=SUCCEEDED/ROUNDS and methods=NAME:COUNT,…. Without --keep-going the first failure
// ends the run with status 1.
import Foundation
import NIOCore
import Q2Q

func option(_ name: String) -> String? {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("connect-bench: \(message)\n".utf8))
    exit(1)
}

func required(_ name: String) -> String {
    guard let value = option(name) else { fail("\(name) is required") }
    return value
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func median(_ values: [Double]) -> Double? { values.isEmpty ? nil : values.sorted()[values.count / 2] }

let home = URL(fileURLWithPath: required("--home"))
let from = try Q2QAddress(required("--from"))
let to = try Q2QAddress(required("--to"))
let service = required("--service")
let rounds = max(1, Int(option("--rounds") ?? "7") ?? 7)
let greeting = CommandLine.arguments.contains("--greeting")
let keepGoing = CommandLine.arguments.contains("--keep-going")
let echoBytes = max(1, Int(option("--bytes") ?? "1") ?? 1)
guard let methods = Q2QMethodPolicy(option("--method") ?? "auto") else { fail("bad --method") }

/// One connection: (time to the greeting, time to the echo, method).
func round(_ node: Q2QNode, seed: UInt64) async throws -> (Double?, Double, String) {
    let start = ContinuousClock.now
    let stream = try await node.connect(from: from, to: to, service: service, methods: methods)
    var payload = [UInt8](repeating: 0, count: echoBytes)
    var state = seed | 1
    for index in payload.indices {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        payload[index] = UInt8(truncatingIfNeeded: state)
    }
    // Timed to the last echoed byte's arrival: closing the stream afterwards (TLS's
    // close_notify both ways) is not part of it.
    let (firstByte, echoed, echoTime) = try await stream.channel.executeThenClose { inbound, outbound in
        var iterator = inbound.makeAsyncIterator()
        var firstByte: Double?
        if greeting {
            guard let hello = try await iterator.next(), hello.readableBytes > 0 else { throw Q2QNodeError("no greeting") }
            firstByte = milliseconds(ContinuousClock.now - start)
        }
        try await outbound.write(ByteBuffer(bytes: payload))
        var received: [UInt8] = []
        while received.count < payload.count, let buffer = try await iterator.next() { received += buffer.readableBytesView }
        return (firstByte, received, milliseconds(ContinuousClock.now - start))
    }
    guard echoed == payload else { throw Q2QNodeError("the echo differs from what was sent (\(echoed.count) of \(payload.count) bytes)") }
    // "ptcp6": the method, and that it ran over IPv6.
    let overIPv6 = stream.method.address.map { AddressFamily(host: $0.host) == .v6 } ?? false
    return (firstByte, echoTime, stream.method.name + (overIPv6 ? "6" : ""))
}

var configuration = Q2QNodeConfiguration()
configuration.remembersPaths = !CommandLine.arguments.contains("--no-remembered-paths")
let node = try Q2QNode(home: home, configuration: configuration)
var echoTimes: [Double] = []
var firstBytes: [Double] = []
var methodCounts: [String: Int] = [:]
var succeeded = 0
var cold: Double?
for index in 0..<rounds {
    do {
        let (firstByte, echo, method) = try await round(node, seed: UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15)
        succeeded += 1
        methodCounts[method, default: 0] += 1
        if index == 0 { cold = echo } else { echoTimes.append(echo) }
        if index > 0 || rounds == 1, let firstByte { firstBytes.append(firstByte) }
        let greeted = firstByte.map { String(format: ", first byte %.1f ms", $0) } ?? ""
        FileHandle.standardError.write(Data("round \(index + 1): \(String(format: "%.1f", echo)) ms by \(method)\(greeted)\n".utf8))
    } catch {
        FileHandle.standardError.write(Data("round \(index + 1): failed: \(error)\n".utf8))
        if !keepGoing { fail("round \(index + 1) failed: \(error)") }
    }
}
await node.shutdown()
if let cold { print(String(format: "cold_ms=%.1f", cold)) }
if let warm = median(echoTimes) { print(String(format: "warm_ms=%.1f", warm)) }
if let first = median(firstBytes) { print(String(format: "first_byte_ms=%.1f", first)) }
print("ok=\(succeeded)/\(rounds)")
print("methods=" + methodCounts.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","))

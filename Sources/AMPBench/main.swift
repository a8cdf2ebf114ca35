// amp-bench: the Swift half of scripts/bench/amp-vs-twisted.
//
//   amp-bench server [--port N]            serves BenchEcho on 127.0.0.1 (prints the port)
//   amp-bench client --port N [--concurrency C] [--seconds S] [--payload BYTES]
//                                          calls BenchEcho for S seconds with C calls in
//                                          flight and prints "calls_per_second=…"
import AMP
import Foundation
import NIOCore
import NIOPosix

enum BenchEcho: AMPCommand {
    static let name = "BenchEcho"
    struct Arguments: Codable, Sendable {
        var payload: AMPBytes
        var n: Int
    }
    typealias Response = Arguments
}

func option(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count,
          let parsed = Int(arguments[index + 1]) else { return value }
    return parsed
}

func runServer() async throws {
    var responders = AMPResponders()
    responders.registerImmediate(BenchEcho.self) { arguments, _ in arguments }
    let server = try await AMPServer.bind(host: "127.0.0.1", port: option("--port", default: 0), responders: responders)
    // Unbuffered: the bench script waits for this line in a file.
    FileHandle.standardOutput.write(Data("listening port=\(server.port!)\n".utf8))
    try await server.channel.closeFuture.get()
}

func runClient() async throws {
    let port = option("--port", default: 0)
    let concurrency = option("--concurrency", default: 1)
    let seconds = option("--seconds", default: 3)
    let payload = AMPBytes([UInt8](repeating: 0x61, count: option("--payload", default: 128)))
    let connection = try await AMPConnection.connect(host: "127.0.0.1", port: port)
    // Warm up, then count completed calls until the deadline.
    for n in 0..<200 { _ = try await connection.call(BenchEcho.self, .init(payload: payload, n: n)) }
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(seconds)
    let start = clock.now
    let total = try await withThrowingTaskGroup(of: Int.self) { group in
        for _ in 0..<concurrency {
            // Callers on the connection's event loop: no thread hop per call.
            group.addTask(executorPreference: connection.taskExecutor) {
                var calls = 0
                while clock.now < deadline {
                    let reply = try await connection.call(BenchEcho.self, .init(payload: payload, n: calls))
                    precondition(reply.n == calls && reply.payload.count == payload.count)
                    calls += 1
                }
                return calls
            }
        }
        return try await group.reduce(0, +)
    }
    let elapsed = clock.now - start
    let secondsElapsed = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    print("calls=\(total) seconds=\(String(format: "%.3f", secondsElapsed)) calls_per_second=\(Int(Double(total) / secondsElapsed))")
    await connection.close()
}

switch CommandLine.arguments.dropFirst().first {
case "server": try await runServer()
case "client": try await runClient()
default:
    print("usage: amp-bench server [--port N] | client --port N [--concurrency C] [--seconds S] [--payload BYTES]")
    exit(2)
}

// soak-load: hours of mixed load on one presence server, for scripts/soak/presence.
//
//   soak-load --server HOST:PORT --domain D --password-file F --home DIR --pid PID
//             [--seconds N] [--pairs P] [--interval S] [--warmup S]
//
// Accounts a0…a(P-1), b0…b(P-1) and c0…c3 @D must exist with the password in F. Runs,
// until N seconds have passed:
//   - P pairs: b_i listens for "echo"; a_i connects to it again and again, over tcp
//     and over the relay in turn, sends 16 KiB and checks the echo;
//   - churn: c1…c3's nodes come up, listen, are reached over the relay by c0, and shut
//     down;
//   - strangers: garbage, half a box held for a while, silent connections abandoned,
//     Who-Am-I in clear;
// and every S seconds samples the server (process PID): resident memory, descriptors,
// threads, and the time it takes to answer a new connection's Who-Am-I (its lag).
// After W seconds of warm-up, a sample series that keeps growing, or any error a
// well-behaved client saw, fails the run (exit 1). Prints one line per sample and a
// summary.
import AMP
import Foundation
import Locking
import NIOCore
import NIOPosix
import Q2Q

func option(_ name: String) -> String? {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func required(_ name: String) -> String {
    guard let value = option(name) else {
        FileHandle.standardError.write(Data("soak-load: \(name) is required (see the comment at the top of Sources/SoakLoad/main.swift)\n".utf8))
        exit(2)
    }
    return value
}

guard let server = HostPort(required("--server")) else { fatalError("--server takes HOST:PORT") }
let domain = required("--domain")
let password = Array((try String(contentsOfFile: required("--password-file"), encoding: .utf8))
    .split(separator: "\n").first.map(String.init)?.utf8 ?? "".utf8)
let home = URL(fileURLWithPath: required("--home"))
let serverPID = Int32(required("--pid"))!
let seconds = Int(option("--seconds") ?? "600")!
let pairs = Int(option("--pairs") ?? "4")!
let interval = Int(option("--interval") ?? "10")!
let warmup = Int(option("--warmup") ?? "\(max(interval * 2, seconds / 5))")!
let deadline = ContinuousClock.now + .seconds(seconds)
let started = ContinuousClock.now

/// What the well-behaved clients did and what went wrong for them.
final class Tally: Sendable {
    private let state = Locked((operations: [String: Int](), errors: [String]()))
    func succeeded(_ kind: String) { state.withLock { $0.operations[kind, default: 0] += 1 } }
    func failed(_ kind: String, _ error: any Error) {
        let line = "\(kind): \(error)"
        print("error \(line)")
        state.withLock { $0.errors.append(line) }
    }
    var operations: [String: Int] { state.withLock { $0.operations } }
    var errors: [String] { state.withLock { $0.errors } }
}
let tally = Tally()

/// Registers `name` once, in its own home (one at a time: the server checks a few
/// passwords at once and asks the rest to come back).
func register(_ name: String) async throws {
    let address = try Q2QAddress("\(name)@\(domain)")
    let store = try SQLiteNodeStore(home: home.appendingPathComponent(name))
    try await store.setServer(server, for: domain)
    _ = try await PresenceClient(store: store).register(address, password: password)
}

/// A new node for `name`, registered before.
func node(for name: String) throws -> (Q2QNode, Q2QAddress) {
    let store = try SQLiteNodeStore(home: home.appendingPathComponent(name))
    return (Q2QNode(store: store, configuration: .init(listenHost: "127.0.0.1")), try Q2QAddress("\(name)@\(domain)"))
}

func echo(_ listener: Q2QListener) -> Task<Void, Never> {
    Task {
        await withDiscardingTaskGroup { group in
            for await stream in listener.connections {
                group.addTask {
                    try? await stream.channel.executeThenClose { inbound, outbound in
                        for try await buffer in inbound { try await outbound.write(buffer) }
                    }
                }
            }
        }
    }
}

/// Sends `count` bytes on a new stream and checks that they come back.
func exchange(_ node: Q2QNode, from: Q2QAddress, to: Q2QAddress, service: String, methods: Q2QMethodPolicy, count: Int) async throws {
    let payload = (0..<count).map { _ in UInt8.random(in: 0...255) }
    let stream = try await node.connect(from: from, to: to, service: service, methods: methods)
    try await stream.channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(bytes: payload))
        var received: [UInt8] = []
        for try await buffer in inbound {
            received += buffer.readableBytesView
            if received.count >= count { break }
        }
        guard received == payload else { throw SoakError("\(received.count) of \(count) bytes came back, or different ones") }
    }
}

struct SoakError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func sleep(_ duration: Duration) async { try? await Task.sleep(for: duration) }

/// One pair: b listens, a connects over tcp and the relay in turn.
func pair(_ index: Int) async {
    do {
        let (bob, bobAddress) = try node(for: "b\(index)")
        let (alice, aliceAddress) = try node(for: "a\(index)")
        let listener = try await bob.listen(as: bobAddress, service: "echo")
        let echoing = echo(listener)
        var round = 0
        while ContinuousClock.now < deadline {
            round += 1
            let method: Q2QMethodPolicy = round % 2 == 0 ? .tcp : .relay
            let kind = round % 2 == 0 ? "tcp" : "relay"
            do {
                try await exchange(alice, from: aliceAddress, to: bobAddress, service: "echo", methods: method, count: 16 * 1024)
                tally.succeeded(kind)
            } catch {
                tally.failed(kind, error)
            }
            // The server lets a caller send one inbound a second after a burst of 60.
            await sleep(.milliseconds(1200))
        }
        echoing.cancel()
        await listener.close()
        await alice.shutdown()
        await bob.shutdown()
    } catch {
        tally.failed("pair \(index) setup", error)
    }
}

/// Nodes that come and go: each round a fresh node for c1…c3 listens, is reached over
/// the relay by c0, and shuts down.
func churn() async {
    do {
        let (caller, callerAddress) = try node(for: "c0")
        var round = 0
        while ContinuousClock.now < deadline {
            let name = "c\(1 + round % 3)"
            round += 1
            do {
                let (callee, calleeAddress) = try node(for: name)
                let listener = try await callee.listen(as: calleeAddress, service: "churn")
                let echoing = echo(listener)
                try await exchange(caller, from: callerAddress, to: calleeAddress, service: "churn", methods: .relay, count: 1024)
                echoing.cancel()
                await listener.close()
                await callee.shutdown()
                tally.succeeded("churn")
            } catch {
                tally.failed("churn", error)
            }
            await sleep(.milliseconds(1200))
        }
        await caller.shutdown()
    } catch {
        tally.failed("churn setup", error)
    }
}

let whoAmI: [UInt8] = [0, 8] + Array("_command".utf8) + [0, 8] + Array("Who-Am-I".utf8)
    + [0, 4] + Array("_ask".utf8) + [0, 1] + Array("1".utf8) + [0, 0]

/// Connections a stranger makes: none of them may hurt the others.
func strangers() async {
    let group = MultiThreadedEventLoopGroup.singleton
    var round = 0
    await withDiscardingTaskGroup { tasks in
        while ContinuousClock.now < deadline {
            round += 1
            let kind = round % 4
            tasks.addTask {
                guard let channel = try? await ClientBootstrap(group: group).connect(host: server.host, port: server.port).get() else { return }
                switch kind {
                case 0: channel.writeAndFlush(ByteBuffer(bytes: (0..<512).map { _ in UInt8.random(in: 0...255) }), promise: nil)
                case 1:
                    channel.writeAndFlush(ByteBuffer(bytes: Array(whoAmI.prefix(13))), promise: nil)
                    await sleep(.seconds(3))
                case 2: await sleep(.seconds(2))  // silent, then abandoned
                default: channel.writeAndFlush(ByteBuffer(bytes: whoAmI), promise: nil)
                }
                try? await channel.close()
            }
            await sleep(.milliseconds(100))
        }
    }
}

/// One sample of the server process.
struct Sample {
    var elapsed: Double
    var residentKiB: Double
    var descriptors: Double
    var threads: Double
    var lagMilliseconds: Double
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func sample() async -> Sample? {
    guard let status = try? String(contentsOfFile: "/proc/\(serverPID)/status", encoding: .utf8),
          let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(serverPID)/fd") else { return nil }
    func field(_ name: String) -> Double {
        let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
        return Double(line.split(whereSeparator: \.isWhitespace).dropFirst().first ?? "") ?? .nan
    }
    let start = ContinuousClock.now
    var lag = Double.nan
    if let connection = try? await AMPConnection.connect(host: server.host, port: server.port),
       (try? await connection.call(WhoAmI.self, AMPEmpty())) != nil {
        lag = seconds(ContinuousClock.now - start) * 1000
        await connection.close()
    }
    return Sample(elapsed: seconds(ContinuousClock.now - started), residentKiB: field("VmRSS"),
                  descriptors: Double(descriptors.count), threads: field("Threads"), lagMilliseconds: lag)
}

/// The least-squares slope of `values` against `times`, per second.
func slope(_ times: [Double], _ values: [Double]) -> Double {
    let n = Double(times.count)
    let meanT = times.reduce(0, +) / n, meanV = values.reduce(0, +) / n
    let covariance = zip(times, values).map { ($0 - meanT) * ($1 - meanV) }.reduce(0, +)
    let variance = times.map { ($0 - meanT) * ($0 - meanT) }.reduce(0, +)
    return variance > 0 ? covariance / variance : 0
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
}

for name in (0..<pairs).flatMap({ ["a\($0)", "b\($0)"] }) + ["c0", "c1", "c2", "c3"] {
    do { try await register(name) } catch {
        print("soak: FAILED: \(name)@\(domain) could not register: \(error)")
        exit(1)
    }
}

var samples: [Sample] = []
await withDiscardingTaskGroup { group in
    for index in 0..<pairs { group.addTask { await pair(index) } }
    group.addTask { await churn() }
    group.addTask { await strangers() }
    while ContinuousClock.now + .seconds(interval) <= deadline {
        await sleep(.seconds(interval))
        guard let next = await sample() else {
            tally.failed("sampling", SoakError("the server (pid \(serverPID)) is gone"))
            break
        }
        samples.append(next)
        print(String(format: "sample t=%.0fs rss=%.1fMiB fds=%.0f threads=%.0f lag=%.1fms operations=%d errors=%d",
                     next.elapsed, next.residentKiB / 1024, next.descriptors, next.threads, next.lagMilliseconds,
                     tally.operations.values.reduce(0, +), tally.errors.count))
    }
}

// Trends after warm-up: growth over the window, by the least-squares line, against an
// allowance per series (noise, and what allocators keep).
var problems: [String] = []
let settled = samples.filter { $0.elapsed >= Double(warmup) }
if settled.count >= 3 {
    let times = settled.map(\.elapsed)
    let window = times.last! - times.first!
    let series: [(String, [Double], Double, String)] = [
        ("resident memory", settled.map { $0.residentKiB / 1024 }, max(16, 0.1 * settled[0].residentKiB / 1024), "MiB"),
        ("descriptors", settled.map(\.descriptors), 16, ""),
        ("threads", settled.map(\.threads), 2, ""),
    ]
    for (name, values, allowance, unit) in series {
        let growth = slope(times, values) * window
        print(String(format: "trend %@: %+.1f%@ over %.0f s after warm-up (allowed %.1f%@), from %.1f to %.1f",
                     name, growth, unit, window, allowance, unit, values.first!, values.last!))
        if growth > allowance { problems.append("\(name) grew by \(String(format: "%.1f", growth))\(unit)") }
    }
    let third = max(1, settled.count / 3)
    let early = median(settled.prefix(third).map(\.lagMilliseconds)), late = median(settled.suffix(third).map(\.lagMilliseconds))
    print(String(format: "trend lag: median %.1f ms early, %.1f ms late", early, late))
    if !(late <= max(50, 4 * early)) { problems.append(String(format: "lag grew from %.1f ms to %.1f ms", early, late)) }
} else {
    problems.append("only \(settled.count) samples after the \(warmup) s warm-up (run longer, or sample more often)")
}

let operations = tally.operations
print("operations: " + operations.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
for required in ["tcp", "relay", "churn"] where operations[required, default: 0] == 0 {
    problems.append("no \(required) operation succeeded")
}
let errors = tally.errors
if !errors.isEmpty { problems.append("\(errors.count) errors seen by well-behaved clients (first: \(errors[0]))") }
if problems.isEmpty {
    print("soak: passed (\(samples.count) samples, \(operations.values.reduce(0, +)) operations, 0 errors)")
} else {
    print("soak: FAILED: " + problems.joined(separator: "; "))
    exit(1)
}

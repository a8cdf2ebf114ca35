import Foundation
import NIOCore
import NIOPosix
import PTCP
import PTCPSimulator

// ptcp-bench core   [--bytes N] [--rtt MS] [--rate MBIT] [--loss PCT] [--seed N] [--cc bbr|newreno]
//     the sans-I/O core over a simulated link: goodput, and how fast the core itself runs
// ptcp-bench sink   --port P                      accept PTCP connections, discard, report
// ptcp-bench send   --to HOST:PORT --seconds S    send for S seconds; prints "goodput_mbit=…"
let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}
func number(_ name: String, _ fallback: Double) -> Double { option(name).flatMap(Double.init) ?? fallback }
/// A line on standard output at once (the scripts wait for it through a pipe).
func say(_ line: String) {
    FileHandle.standardOutput.write((line + "\n").data(using: .utf8)!)
}
func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
var configuration = PTCPConfiguration()
if let name = option("--cc"), let kind = PTCPCongestionControl(rawValue: name) { configuration.congestionControl = kind }

/// Counts and drops what arrives; prints a line per connection when it ends.
final class Sink: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private var bytes = 0
    private var start = ContinuousClock.now
    func channelActive(context: ChannelHandlerContext) { start = .now }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { bytes += unwrapInboundIn(data).readableBytes }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            let elapsed = seconds(.now - start)
            say(String(format: "received %d bytes in %.2f s: %.1f Mbit/s", bytes, elapsed, Double(bytes) * 8 / elapsed / 1e6))
            context.close(promise: nil)
        }
    }
}

/// Writes as fast as the channel takes until the deadline, then half-closes.
final class Source: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let until: ContinuousClock.Instant
    let done: EventLoopPromise<Int>
    private var sent = 0
    private let chunk = ByteBuffer(repeating: 0x5A, count: 64 * 1024)
    init(until: ContinuousClock.Instant, done: EventLoopPromise<Int>) {
        self.until = until
        self.done = done
    }
    func channelActive(context: ChannelHandlerContext) { pump(context) }
    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context) }
    private func pump(_ context: ChannelHandlerContext) {
        guard sent >= 0 else { return }
        while context.channel.isWritable, ContinuousClock.now < until {
            context.write(wrapOutboundOut(chunk), promise: nil)
            sent += chunk.readableBytes
        }
        context.flush()
        if ContinuousClock.now >= until {
            let total = sent
            sent = -1
            context.close(mode: .output).whenComplete { _ in self.done.succeed(total) }
        } else if context.channel.isWritable {
            context.eventLoop.scheduleTask(in: .milliseconds(5)) { self.pump(context) }
        }
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {}
}

switch arguments.first {
case "sink":
    let port = Int(number("--port", 9000))
    let endpoint = try await PTCPEndpoint.bind(host: option("--host") ?? "0.0.0.0", port: port, configuration: configuration) { channel in
        channel.pipeline.addHandler(Sink())
    }
    say("listening on \(endpoint.localAddress)")
    for await _ in endpoint.incoming {}
case "send":
    guard let target = option("--to"), let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
        FileHandle.standardError.write("ptcp-bench send: --to HOST:PORT is required\n".data(using: .utf8)!)
        exit(2)
    }
    let address = try SocketAddress(ipAddress: String(target[..<colon]), port: port)
    let endpoint = try await PTCPEndpoint.bind(host: "0.0.0.0", port: 0, configuration: configuration)
    let duration = number("--seconds", 10)
    let done = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
    let start = ContinuousClock.now
    let channel = try await endpoint.connect(to: address) { channel in
        channel.pipeline.addHandler(Source(until: start + .milliseconds(Int64(duration * 1000)), done: done))
    }
    let bytes = try await done.futureResult.get()
    // Wait until the receiver has everything (the connection closes both ways).
    try? await channel.closeFuture.get()
    let elapsed = seconds(.now - start)
    print(String(format: "sent %d bytes in %.2f s; goodput_mbit=%.1f", bytes, elapsed, Double(bytes) * 8 / elapsed / 1e6))
    await endpoint.close()
default:
    let bytes = Int(number("--bytes", 50_000_000))
    let rtt = number("--rtt", 50)
    let rate = number("--rate", 100)
    let loss = number("--loss", 0) / 100
    let link = SimulatedLink(delay: .microseconds(Int64(rtt * 500)), megabitsPerSecond: rate, loss: loss)
    var simulation = PTCPSimulation(forward: link, configuration: configuration)
    let start = ContinuousClock.now
    let outcome = simulation.run(bytes: bytes, seed: UInt64(number("--seed", 1)))
    let wall = seconds(.now - start)
    print("simulated link: rtt \(rtt) ms, \(rate) Mbit/s, loss \(loss * 100) %, \(configuration.congestionControl)")
    print("delivered \(outcome.bytesDelivered) of \(bytes) bytes, corrupt \(outcome.corruptBytes), closed \(outcome.bothClosed)")
    print(String(format: "goodput %.1f Mbit/s (simulated %.2f s); core speed %.0f Mbit/s of CPU (%.2f s wall, both ends)",
                 outcome.megabitsPerSecond, seconds(outcome.transferTime), Double(outcome.bytesDelivered) * 8 / wall / 1e6, wall))
    print("client: \(outcome.client)")
    print("server: \(outcome.server)")
}

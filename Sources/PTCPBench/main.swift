import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import PTCP
import PTCPSimulator

// ptcp-bench core   [--bytes N] [--rtt MS] [--rate MBIT] [--loss PCT] [--reorder PCT] [--seed N] [--cc bbr|newreno]
//     the sans-I/O core over a simulated link: goodput, and how fast the core itself runs
// ptcp-bench sink   --port P [--check] [--tls-certificate PEM --tls-key PEM]
//     accept PTCP connections (TLS 1.3 on top when given), check the pattern, report
// ptcp-bench send   --to HOST:PORT (--seconds S | --bytes N) [--tls-trust PEM]
//     send zeros for S seconds, or N bytes of the checked pattern; prints "goodput_mbit=…"
// ptcp-bench punch  --port P --peer HOST:PORT [--bytes N]
//     simultaneous open: listen on P and connect to the peer at once (the peer does the
//     same), send N pattern bytes out, check N coming in; exits 0 when both arrived
// Every mode takes --cc bbr|newreno, --datagram-size N (UDP payload to start with;
// default 1232, IPv6's minimum MTU) and --probe-size N (the larger size path MTU probing
// tries over IPv6; default 1452, 20 more over IPv4; 0: no probing).
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
var configuration = PTCPConfiguration()
if let name = option("--cc"), let kind = PTCPCongestionControl(rawValue: name) { configuration.congestionControl = kind }
if let size = option("--datagram-size").flatMap(Int.init) { configuration.maximumDatagramSize = size }
if let size = option("--probe-size").flatMap(Int.init) { configuration.probedDatagramSize = size > 0 ? size : nil }

/// Counts what arrives, checking the pattern when the stream starts with it; prints a
/// line per connection when it ends.
final class Sink: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private var bytes = 0
    private var patternBroken = 0
    private var reported = false
    private var start = ContinuousClock.now
    let check: Bool
    /// Told once, with whether the pattern held, when the stream ends.
    let onReport: (@Sendable (Bool) -> Void)?
    init(check: Bool, onReport: (@Sendable (Bool) -> Void)? = nil) {
        self.check = check
        self.onReport = onReport
    }
    func channelActive(context: ChannelHandlerContext) { start = .now }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard check else {
            bytes += buffer.readableBytes
            return
        }
        for byte in buffer.readableBytesView {
            if byte != PTCPSimulation.patternByte(at: UInt64(bytes)) { patternBroken += 1 }
            bytes += 1
        }
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // TLS reports the peer's close_notify, and PTCP its FIN after it: report once.
        if case ChannelEvent.inputClosed = event, !reported {
            reported = true
            let elapsed = (ContinuousClock.now - start).seconds
            let pattern = !check ? "not checked" : patternBroken == 0 ? "pattern ok" : "pattern differs in \(patternBroken) bytes"
            say(String(format: "received %ld bytes in %.2f s: %.1f Mbit/s; ", bytes, elapsed, Double(bytes) * 8 / elapsed / 1e6) + pattern)
            onReport?(patternBroken == 0)
            context.close(promise: nil)
        }
    }
}

/// Writes as fast as the channel takes until the deadline, then half-closes.
final class Source: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let until: ContinuousClock.Instant
    /// Send exactly this many bytes of the pattern instead of zeros until `until`.
    let patternBytes: Int?
    let tls: Bool
    let done: EventLoopPromise<Int>
    private var sent = 0
    private var started = false
    /// Our half-close went out (or the channel failed): nothing more to write.
    private var stopped = false
    private let chunk = ByteBuffer(repeating: 0, count: 64 * 1024)
    init(until: ContinuousClock.Instant, patternBytes: Int?, tls: Bool, done: EventLoopPromise<Int>) {
        self.until = until
        self.patternBytes = patternBytes
        self.tls = tls
        self.done = done
    }
    func channelActive(context: ChannelHandlerContext) {
        started = !tls
        pump(context)
    }
    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context) }
    private var finished: Bool {
        if let patternBytes { return sent >= patternBytes }
        return ContinuousClock.now >= until
    }
    /// Set while pump runs: a write or flush can re-enter it through a writability
    /// change, and a nested pump that flushed or closed inside the TLS handler's own
    /// flush could reorder what that handler sends. The loop itself re-checks.
    private var pumping = false

    private func pump(_ context: ChannelHandlerContext) {
        guard started, !stopped, !pumping else { return }
        pumping = true
        defer { pumping = false }
        // The flush after the loop can make the channel writable again at once (what it
        // sends frees room), and the writability event it fires meets the guard above:
        // so write again until the channel really is full. (A 5 ms retry here instead
        // held 1 Gbit/s links to about 390 Mbit/s.)
        repeat {
            while context.channel.isWritable, !finished {
                if let patternBytes {
                    let base = UInt64(sent)
                    let count = min(64 * 1024, patternBytes - sent)
                    sent += count
                    context.write(wrapOutboundOut(ByteBuffer(bytes: (0..<count).map { PTCPSimulation.patternByte(at: base + UInt64($0)) })), promise: nil)
                } else {
                    sent += chunk.readableBytes
                    context.write(wrapOutboundOut(chunk), promise: nil)
                }
                // With TLS each chunk goes down at once: the TLS handler holds writes until a
                // flush, so the channel below would never become unwritable, and this loop
                // would buffer until its 4 GiB buffer overflowed.
                if tls { context.flush() }
            }
            context.flush()
        } while context.channel.isWritable && !finished
        if finished, !stopped {
            stopped = true
            let total = sent
            context.close(mode: .output).whenComplete { _ in self.done.succeed(total) }
        }
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            started = true
            pump(context)
        }
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !stopped { done.fail(error) }
        stopped = true
        context.close(promise: nil)
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write("ptcp-bench: \(message)\n".data(using: .utf8)!)
    exit(1)
}

let usage = """
    usage: ptcp-bench core [--bytes N] [--rtt MS] [--rate MBIT] [--loss PCT] [--reorder PCT] [--seed N] [--cc bbr|newreno]
           ptcp-bench sink --port P [--host H] [--check] [--tls-certificate PEM --tls-key PEM] [--cc …]
           ptcp-bench send --to HOST:PORT (--seconds S | --bytes N) [--tls-trust PEM] [--cc …]
           ptcp-bench punch --port P --peer HOST:PORT [--bytes N]
    core: the sans-I/O PTCP core over a simulated link (goodput, and the core's own speed).
    sink: accept PTCP connections (TLS 1.3 on top with a certificate), count (and with
          --check verify) what arrives, print a line per connection.
    send: connect and send zeros for S seconds, or N bytes of the pattern sink --check verifies.
    punch: simultaneous open through NATs, no rendezvous: both peers run it at once, each
          listening on P and connecting to the other; each sends N pattern bytes (default
          1 MB) and checks what comes in. Exits 0 when both directions arrived intact.
    every mode: --cc bbr|newreno, --datagram-size N (UDP payload to start with, default
          1232), --probe-size N (the larger size path MTU probing tries over IPv6, default
          1452; 20 more over IPv4; 0: none).
    """

switch arguments.first {
case "--help", "-h", "help":
    say(usage)
case "sink":
    let port = Int(number("--port", 9000))
    var tls: NIOSSLContext?
    if let certificate = option("--tls-certificate"), let key = option("--tls-key") {
        tls = try NIOSSLContext(configuration: .makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))))
    }
    let serverTLS = tls
    let check = arguments.contains("--check")
    let endpoint = try await PTCPEndpoint.bind(host: option("--host") ?? "0.0.0.0", port: port, configuration: configuration) { channel in
        channel.eventLoop.makeCompletedFuture {
            if let serverTLS { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverTLS)) }
            try channel.pipeline.syncOperations.addHandler(Sink(check: check))
        }
    }
    say("listening on \(endpoint.localAddress)")
    for await _ in endpoint.incoming {}
case "punch":
    guard let peer = option("--peer"), let colon = peer.lastIndex(of: ":"), let peerPort = Int(peer[peer.index(after: colon)...]) else {
        fail("punch: --peer HOST:PORT is required")
    }
    let bytes = Int(number("--bytes", 1_000_000))
    var punching = configuration
    punching.initialRetransmissionTimeout = .milliseconds(250)   // the first SYNs meet closed NATs
    let received = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Bool.self)
    let endpoint = try await PTCPEndpoint.bind(host: "0.0.0.0", port: Int(number("--port", 9000)), configuration: punching) { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(Sink(check: true) { intact in received.succeed(intact) })
        }
    }
    let start = ContinuousClock.now
    let sent = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
    do {
        let address = try SocketAddress(ipAddress: String(peer[..<colon]), port: peerPort)
        let outgoing = try await endpoint.connect(to: address) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(Source(until: start + .seconds(3600), patternBytes: bytes, tls: false, done: sent))
            }
        }
        say(String(format: "connected out in %.0f ms", (ContinuousClock.now - start).seconds * 1000))
        _ = try await sent.futureResult.get()
        let intact = try await received.futureResult.get()
        // Our bytes are all delivered once the peer, having read them, closes its end.
        try? await outgoing.closeFuture.get()
        say(intact ? "both directions intact" : "the incoming stream differs")
        exit(intact ? 0 : 1)
    } catch {
        fail("punch with \(peer) failed: \(error)")
    }
case "send":
    guard let target = option("--to"), let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
        fail("send: --to HOST:PORT is required")
    }
    var tls: NIOSSLContext?
    if let trust = option("--tls-trust") {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(trust))
        configuration.minimumTLSVersion = .tlsv13
        tls = try NIOSSLContext(configuration: configuration)
    }
    let clientTLS = tls
    let patternBytes = option("--bytes").flatMap(Int.init)
    let address = try SocketAddress(ipAddress: String(target[..<colon]), port: port)
    let endpoint = try await PTCPEndpoint.bind(host: "0.0.0.0", port: 0, configuration: configuration)
    let duration = number("--seconds", 10)
    let done = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
    let start = ContinuousClock.now
    let channel: any Channel
    let bytes: Int
    do {
        channel = try await endpoint.connect(to: address) { channel in
            channel.eventLoop.makeCompletedFuture {
                if let clientTLS {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: clientTLS, serverHostname: "localhost"))
                }
                try channel.pipeline.syncOperations.addHandler(Source(until: start + .milliseconds(Int64(duration * 1000)),
                                                                      patternBytes: patternBytes, tls: clientTLS != nil, done: done))
            }
        }
        bytes = try await done.futureResult.get()
    } catch {
        fail("send to \(target) failed: \(error)")
    }
    // Wait until the receiver has everything (the connection closes both ways).
    try? await channel.closeFuture.get()
    let elapsed = (ContinuousClock.now - start).seconds
    print(String(format: "sent %ld bytes in %.2f s; goodput_mbit=%.1f", bytes, elapsed, Double(bytes) * 8 / elapsed / 1e6))
    if let statistics = try? await channel.getOption(PTCPChannelOptions.statistics).get() {
        print("packets sent \(statistics.packetsSent), lost \(statistics.lostPackets) (\(statistics.spuriousLosses) of them late, not lost), retransmitted bytes "
              + "\(statistics.retransmittedBytes), retransmission timeouts \(statistics.retransmissionTimeouts), "
              + "path MTU probes \(statistics.pathMTUProbes), ProbeRTTs \(statistics.pathDelayProbes)")
    }
    await endpoint.close()
default:
    let bytes = Int(number("--bytes", 50_000_000))
    let rtt = number("--rtt", 50)
    let rate = number("--rate", 100)
    let loss = number("--loss", 0) / 100
    let link = SimulatedLink(delay: .microseconds(Int64(rtt * 500)), megabitsPerSecond: rate, loss: loss,
                             reorder: number("--reorder", 0) / 100)
    var simulation = PTCPSimulation(forward: link, configuration: configuration)
    let start = ContinuousClock.now
    let outcome = simulation.run(bytes: bytes, seed: UInt64(number("--seed", 1)))
    let wall = (ContinuousClock.now - start).seconds
    print("simulated link: rtt \(rtt) ms, \(rate) Mbit/s, loss \(loss * 100) %, \(configuration.congestionControl)")
    print("delivered \(outcome.bytesDelivered) of \(bytes) bytes, corrupt \(outcome.corruptBytes), closed \(outcome.bothClosed)")
    print(String(format: "goodput %.1f Mbit/s (simulated %.2f s); core speed %.0f Mbit/s of CPU (%.2f s wall, both ends)",
                 outcome.megabitsPerSecond, outcome.transferTime.seconds, Double(outcome.bytesDelivered) * 8 / wall / 1e6, wall))
    print("client: \(outcome.client)")
    print("server: \(outcome.server)")
}

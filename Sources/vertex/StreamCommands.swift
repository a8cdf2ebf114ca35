import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Q2Q

/// `bob@example.com/SERVICE`: an address and a service.
struct ServiceTarget: ExpressibleByArgument {
    var address: Q2QAddress
    var service: String

    init?(argument: String) {
        guard let slash = argument.firstIndex(of: "/"),
              let address = try? Q2QAddress(String(argument[..<slash])), !address.resource.isEmpty else { return nil }
        let service = String(argument[argument.index(after: slash)...])
        guard !service.isEmpty, !service.hasPrefix("."), service.utf8.count <= 255 else { return nil }
        self.address = address
        self.service = service
    }
}

extension Q2QMethodPolicy: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

/// Options of every command that makes or accepts streams.
struct NodeOptions: ParsableArguments {
    @OptionGroup var home: HomeOptions

    @Flag(name: .shortAndLong, help: "Say which method carried each stream.")
    var verbose = false

    @Flag(help: "No PTCP paths: neither offer nor try ptcp/rptcp (no UDP ports, no hole punching).")
    var noUdp = false

    @Flag(help: ArgumentHelp("Do not ask the home router to map the ports this command listens on.",
                             discussion: "By default a listening command asks the default gateway for port mappings (PCP, else NAT-PMP) and offers the mapped public addresses to peers; routers without it are asked a few times, in the background, and cost nothing."))
    var noPortmap = false

    @Option(help: ArgumentHelp("The lifetime to ask for each port mapping, in seconds; mappings are renewed before it ends and deleted on exit.",
                               valueName: "seconds"))
    var portmapLifetime: Int = 7200

    @Flag(help: ArgumentHelp("No IPv6 paths: neither offer nor try tcp/ptcp over this host's IPv6 addresses.",
                             discussion: "By default a host with a global IPv6 address offers tcp@ and ptcp@ on it beside IPv4, and connections try IPv6 first (Happy Eyeballs), which goes direct where IPv4 NATs defeat hole punching."))
    var noIpv6 = false

    @Flag(help: "Also offer unique local IPv6 addresses (fc00::/7), for peers inside the same organisation.")
    var ipv6UniqueLocal = false

    func validate() throws {
        guard (2...86_400).contains(portmapLifetime) else { throw ValidationError("--portmap-lifetime must be 2–86400 seconds.") }
    }

    func openNode(listenHost: String = "0.0.0.0", published: [String] = [], store: SQLiteNodeStore? = nil) throws -> Q2QNode {
        let store = try store ?? home.openStore()
        var configuration = Q2QNodeConfiguration(listenHost: listenHost, publishedHosts: published.isEmpty ? nil : published,
                                                 udpEnabled: !noUdp)
        configuration.portMapping = !noPortmap
        configuration.portMappingLifetime = .seconds(portmapLifetime)
        configuration.ipv6 = !noIpv6
        configuration.ipv6UniqueLocal = ipv6UniqueLocal
        return Q2QNode(store: store, configuration: configuration)
    }

    func say(_ line: String) {
        guard verbose else { return }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

/// A local TCP connection as an async channel that half-closes.
func connectTCP(_ target: HostPort) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .connect(host: target.host, port: target.port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel,
                                                            configuration: .init(isOutboundHalfClosureEnabled: true))
            }
        }
}

/// Copies both ways until both directions have ended; the end of one side's input
/// half-closes the other side's output.
func splice(_ a: NIOAsyncChannel<ByteBuffer, ByteBuffer>, _ b: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async throws {
    try await a.executeThenClose { aIn, aOut in
        try await b.executeThenClose { bIn, bOut in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await buffer in aIn { try await bOut.write(buffer) }
                    bOut.finish()
                }
                group.addTask {
                    for try await buffer in bIn { try await aOut.write(buffer) }
                    aOut.finish()
                }
                try await group.waitForAll()
            }
            // Closing a socket drops what it has not sent yet: the local side's queued
            // bytes go out first (Q2Q paths drain themselves, see TCPGracefulClose).
            await drainOutput(of: a.channel)
            await drainOutput(of: b.channel)
        }
    }
}

/// Waits (up to `limit`) until `channel` has handed everything written to the kernel.
/// Channels without the option (relayed, PTCP) keep their writes through a close.
func drainOutput(of channel: any Channel, limit: Duration = .seconds(30)) async {
    let deadline = ContinuousClock.now + limit
    while channel.isActive, ContinuousClock.now < deadline,
          let held = try? await channel.getOption(ChannelOptions.bufferedWritableBytes).get(), held > 0 {
        try? await Task.sleep(for: .milliseconds(5))
    }
}

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Accept Q2Q streams for a service and forward each to a local TCP port.",
        discussion: """
            Listens as ADDRESS for SERVICE through the address's presence server; every \
            stream from an allowed peer is connected to --forward. Allowed are the peers \
            named with --allow, else those you authorized (vertex authorize ADDRESS PEER); \
            anyone else is refused before a path is even offered. --allow-anyone lets \
            every verified address in (anyone can make one by running a domain). Runs \
            until interrupted.

              vertex serve bob@example.com ssh --forward 127.0.0.1:22 --allow alice@example.org
            """
    )

    @Argument(help: "The address to listen as (an identity in your home).")
    var address: Q2QAddress

    @Argument(help: "The service name.")
    var service: String

    @Option(help: ArgumentHelp("Where to forward each stream, HOST:PORT.", valueName: "host:port"))
    var forward: HostPort

    @Option(help: ArgumentHelp("Where to open the direct (tcp) port.", valueName: "address"))
    var listenHost = "0.0.0.0"

    @Option(help: ArgumentHelp("A host to publish for the direct port (repeatable); default: the address the presence server sees us on.",
                               valueName: "host"))
    var publish: [String] = []

    @Option(help: ArgumentHelp("A peer who may connect (repeatable); default: the peers you authorized.", valueName: "address"))
    var allow: [Q2QAddress] = []

    @Flag(help: "Let any verified Q2Q address connect.")
    var allowAnyone = false

    @OptionGroup var node: NodeOptions

    func run() async throws {
        let allowed = Set(allow.isEmpty ? try await node.home.openStore().authorizedSenders(for: address) : allow)
        guard allowAnyone || !allowed.isEmpty else {
            throw CLIError("nobody may connect to \(address)/\(service): name peers with --allow, authorize them "
                + "(vertex authorize \(address) PEER), or pass --allow-anyone")
        }
        let authorize: @Sendable (Q2QAddress) async -> Bool = { peer in
            guard allowed.contains(peer) else {
                FileHandle.standardError.write(Data("vertex serve: refused \(peer): not allowed (--allow \(peer))\n".utf8))
                return false
            }
            return true
        }
        let q2q = try node.openNode(listenHost: listenHost, published: publish)
        let listener: Q2QListener
        do {
            listener = try await q2q.listen(as: address, service: service, description: "forwarded to \(forward)",
                                            authorize: allowAnyone ? nil : authorize)
        } catch let error as Q2QNodeError {
            throw CLIError(error.description)
        } catch let error as PresenceClientError {
            throw CLIError(error.description)
        }
        print("serving \(address)/\(service) → \(forward)")
        fflush(nil)
        // Until Ctrl-C or SIGTERM; then the node stops cleanly (its port mappings deleted).
        await runUntilInterrupted { [forward, node] in
            await withDiscardingTaskGroup { group in
                for await stream in listener.connections {
                    node.say("\(stream.peer) connected by \(stream.method)")
                    group.addTask {
                        do {
                            try await splice(stream.channel, try await connectTCP(forward))
                        } catch {
                            node.say("stream from \(stream.peer) ended: \(error)")
                            try? await stream.channel.channel.close()
                        }
                    }
                }
            }
        }
        await q2q.shutdown()
    }
}

struct TunnelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tunnel",
        abstract: "Open a local TCP port whose every connection is carried to a Q2Q service.",
        discussion: """
              vertex tunnel alice@example.com bob@example.org/ssh --listen 127.0.0.1:2222
            """
    )

    @Argument(help: "Your address.") var from: Q2QAddress
    @Argument(help: "The service, ADDRESS/SERVICE.") var target: ServiceTarget

    @Option(help: ArgumentHelp("The local port, HOST:PORT.", valueName: "host:port"))
    var listen: HostPort

    @Option(help: "auto, or some of tcp, ptcp, rptcp, relay (comma-separated).")
    var method: Q2QMethodPolicy = .auto

    @OptionGroup var node: NodeOptions

    func run() async throws {
        let q2q = try node.openNode()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: listen.host, port: listen.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel,
                                                                configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        print("tunnel \(server.channel.localAddress.flatMap { HostPort($0) }?.description ?? "\(listen)") → \(target.address)/\(target.service)")
        fflush(nil)
        try await server.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await local in inbound {
                    group.addTask { [from, target, method, node] in
                        do {
                            let stream = try await q2q.connect(from: from, to: target.address, service: target.service, methods: method)
                            node.say("connected by \(stream.method)")
                            try await splice(local, stream.channel)
                        } catch {
                            node.say("cannot carry a connection: \(error)")
                            try? await local.channel.close()
                        }
                    }
                }
            }
        }
    }
}

struct ConnectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Bridge standard input and output to one stream to a Q2Q service.",
        discussion: """
            The end of standard input half-closes the stream; the command ends when the \
            service closes its side. Usable as SSH's ProxyCommand:

              ssh -o ProxyCommand='vertex connect alice@example.com bob@example.org/ssh' bob
            """
    )

    @Argument(help: "Your address.") var from: Q2QAddress
    @Argument(help: "The service, ADDRESS/SERVICE.") var target: ServiceTarget

    @Option(help: "auto, or some of tcp, ptcp, rptcp, relay (comma-separated).")
    var method: Q2QMethodPolicy = .auto

    @OptionGroup var node: NodeOptions

    func run() async throws {
        let q2q = try node.openNode()
        let stream: Q2QStream
        do {
            stream = try await q2q.connect(from: from, to: target.address, service: target.service, methods: method)
        } catch let error as Q2QNodeError {
            throw CLIError(error.description)
        } catch let error as PresenceClientError {
            throw CLIError(error.description)
        }
        node.say("connected to \(stream.peer)/\(stream.service) by \(stream.method)")
        let explaining = node.verbose ? PeerDiagnosis.explainRelay(stream, policy: method, store: q2q.store, say: { [node] in node.say($0) }) : nil
        defer { explaining?.cancel() }
        try await stream.channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    try await forEachStandardInputChunk { chunk in try await outbound.write(chunk) }
                    outbound.finish()
                    return false
                }
                group.addTask {
                    for try await buffer in inbound {
                        try buffer.withUnsafeReadableBytes { bytes in
                            var offset = 0
                            while offset < bytes.count {
                                let written = write(STDOUT_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                                if written < 0 {
                                    if errno == EINTR { continue }
                                    throw CLIError("cannot write to standard output (errno \(errno))")
                                }
                                offset += written
                            }
                        }
                    }
                    return true
                }
                // The stream's end (the service closed) ends the command, even if input is still open.
                while let streamEnded = try await group.next() {
                    if streamEnded {
                        group.cancelAll()
                        return
                    }
                }
            }
        }
        // -v: the reason a relayed stream was relayed, if the stream ended before it came.
        await explaining?.value
    }
}

/// Calls `body` with each chunk of standard input until its end. Standard input may be
/// a file, a pipe or a terminal, so plain reads run on a thread of their own; that
/// thread stays at most a few chunks ahead of `body`, so a slow stream holds the
/// input back instead of buffering it all.
func forEachStandardInputChunk(_ body: (ByteBuffer) async throws -> Void) async throws {
    let chunkSize = 256 * 1024
    #if os(Linux)
    // A pipe holds 64 KiB by default, so each read would bring at most that and each
    // chunk would cost a wake-up of three threads; a pipe as large as a chunk lets a
    // fast writer fill whole chunks. (Best effort: not a pipe, or above the system's
    // limit, and it stays as it is.)
    let setPipeSize: Int32 = 1031   // F_SETPIPE_SZ, which Glibc's module does not export
    _ = fcntl(STDIN_FILENO, setPipeSize, Int32(chunkSize))
    #endif
    let slots = InputSlots(free: 4)
    let chunks = AsyncStream<ByteBuffer> { continuation in
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: chunkSize)
            while true {
                slots.take()
                let count = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                if count > 0 {
                    continuation.yield(ByteBuffer(bytes: buffer[0..<count]))
                } else if count < 0, errno == EINTR {
                    slots.give()
                } else {
                    break
                }
            }
            continuation.finish()
        }
    }
    for await chunk in chunks {
        try await body(chunk)
        slots.give()
    }
}

/// How many chunks the input thread may read ahead (a counting semaphore that, unlike
/// DispatchSemaphore, may be released with its count anywhere).
private final class InputSlots: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: Int

    init(free: Int) { self.free = free }

    func take() {
        condition.lock()
        while free == 0 { condition.wait() }
        free -= 1
        condition.unlock()
    }

    func give() {
        condition.lock()
        free += 1
        condition.signal()
        condition.unlock()
    }
}

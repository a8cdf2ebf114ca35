// presence-bench: load on a running presence server, for scripts/bench/presence-load.
//
//   presence-bench identify --port N [--clients C] [--seconds S]
//       C connections, each calling identify back to back; prints "identify_per_second=…"
//   presence-bench sign --port N --password-file F [--clients C] [--seconds S]
//       C connections, each secured once (TLS), then calling sign back to back for
//       user0…user(C-1)@bench.test; prints "sign_per_second=…"
//   presence-bench listeners --port N --password-file F --count K
//       registers user0@bench.test, then holds K secured connections, each listening
//       for its own service; prints "listening=K" and waits until killed
//   presence-bench tls-floor-server
//       the least an idle mutually authenticated TLS 1.3 connection costs with NIO and
//       NIOSSL: a server that only echoes; prints "listening port=N"
//   presence-bench tls-floor-clients --port N --count K
//       holds K such connections, each having sent and got back one 1 KiB message (as a
//       listener sends Listen); prints "listening=K" and waits until killed
import AMP
import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Q2Q

func option(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count,
          let parsed = Int(arguments[index + 1]) else { return value }
    return parsed
}

func stringOption(_ name: String) -> String? {
    let arguments = CommandLine.arguments
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

let domain = "bench.test"

/// Runs `clients` loops for `seconds` and returns completed operations per second.
func measure(clients: Int, seconds: Int, prepare: @escaping @Sendable (Int) async throws -> AMPConnection,
             operation: @escaping @Sendable (Int, AMPConnection) async throws -> Void) async throws -> Double {
    let connections = try await withThrowingTaskGroup(of: (Int, AMPConnection).self) { group in
        for index in 0..<clients { group.addTask { (index, try await prepare(index)) } }
        var all: [(Int, AMPConnection)] = []
        for try await connection in group { all.append(connection) }
        return all
    }
    let deadline = ContinuousClock.now + .seconds(seconds)
    let start = ContinuousClock.now
    let total = try await withThrowingTaskGroup(of: Int.self) { group in
        for (index, connection) in connections {
            group.addTask {
                var count = 0
                while ContinuousClock.now < deadline {
                    try await operation(index, connection)
                    count += 1
                }
                return count
            }
        }
        return try await group.reduce(0, +)
    }
    let elapsed = ContinuousClock.now - start
    for (_, connection) in connections { await connection.close() }
    return Double(total) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
}

let port = option("--port", default: 8788)
let clients = option("--clients", default: 50)
let seconds = option("--seconds", default: 5)
let subject = try Q2QAddress(domain)

switch CommandLine.arguments.dropFirst().first {
case "identify":
    let rate = try await measure(clients: clients, seconds: seconds, prepare: { _ in
        try await AMPConnection.connect(host: "127.0.0.1", port: port)
    }, operation: { _, connection in
        _ = try await connection.call(Identify.self, .init(subject: subject))
    })
    print("identify_per_second=\(Int(rate))")
case "sign":
    guard let file = stringOption("--password-file"), let text = try? String(contentsOfFile: file, encoding: .utf8) else {
        FileHandle.standardError.write(Data("presence-bench sign needs --password-file\n".utf8))
        exit(2)
    }
    let password = Array(text.trimmingCharacters(in: .newlines).utf8)
    let home = FileManager.default.temporaryDirectory.appendingPathComponent("presence-bench-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: home) }
    let client = PresenceClient(store: try SQLiteNodeStore(home: home))
    let requests = try (0..<clients).map { index in
        try Q2QCertificateRequest(address: try Q2QAddress("user\(index)@\(domain)"), key: P256.Signing.PrivateKey())
    }
    let rate = try await measure(clients: clients, seconds: seconds, prepare: { _ in
        let connection = try await client.connect(to: HostPort(host: "127.0.0.1", port: port))
        let authority = try await client.identify(domain, on: connection)
        try await client.secure(connection, domain: domain, authority: authority, as: nil)
        return connection
    }, operation: { index, connection in
        _ = try await connection.call(Sign.self, .init(certificateRequest: requests[index], password: password))
    })
    print("sign_per_second=\(String(format: "%.1f", rate))")
case "listeners":
    guard let file = stringOption("--password-file"), let text = try? String(contentsOfFile: file, encoding: .utf8) else {
        FileHandle.standardError.write(Data("presence-bench listeners needs --password-file\n".utf8))
        exit(2)
    }
    let password = Array(text.trimmingCharacters(in: .newlines).utf8)
    let count = option("--count", default: 10_000)
    let home = FileManager.default.temporaryDirectory.appendingPathComponent("presence-bench-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: home) }
    let client = PresenceClient(store: try SQLiteNodeStore(home: home))
    let server = HostPort(host: "127.0.0.1", port: port)
    let user = try Q2QAddress("user0@\(domain)")
    let identity = try await client.register(user, password: password, server: server)
    let authority = try await client.store.pinnedAuthority(for: domain)!
    let connections = try await withThrowingTaskGroup(of: [AMPConnection].self) { group in
        let lanes = 32
        for lane in 0..<lanes {
            group.addTask {
                var held: [AMPConnection] = []
                for index in stride(from: lane, to: count, by: lanes) {
                    let connection = try await client.connect(to: server)
                    try await client.secure(connection, domain: domain, authority: authority, as: identity)
                    _ = try await connection.call(Listen.self, .init(from: user, protocols: ["service\(index)"], description: ""))
                    held.append(connection)
                }
                return held
            }
        }
        var all: [AMPConnection] = []
        for try await held in group { all += held }
        return all
    }
    print("listening=\(connections.count)")
    fflush(nil)
    try await Task.sleep(for: .seconds(3600))
case "tls-floor-server":
    let identity = Q2QIdentity(authority: try DomainAuthority.create(domain: "floor.test"))
    let context = try NIOSSLContext(configuration: try floorConfiguration(identity, server: true))
    let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.backlog, value: 1024)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                // Every client certificate is accepted: the floor, not a policy.
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context, customVerificationCallback: { _, verdict in
                    verdict.succeed(.certificateVerified)
                }))
                try channel.pipeline.syncOperations.addHandler(Echo())
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    FileHandle.standardOutput.write(Data("listening port=\(listener.localAddress!.port!)\n".utf8))
    try await listener.closeFuture.get()
case "tls-floor-clients":
    let identity = Q2QIdentity(authority: try DomainAuthority.create(domain: "floor-client.test"))
    let context = try NIOSSLContext(configuration: try floorConfiguration(identity, server: false))
    let count = option("--count", default: 10_000)
    let channels = try await withThrowingTaskGroup(of: [any Channel].self) { group in
        let lanes = 32
        for lane in 0..<lanes {
            group.addTask {
                var held: [any Channel] = []
                for _ in stride(from: lane, to: count, by: lanes) {
                    let echoed = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
                    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .channelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                                try channel.pipeline.syncOperations.addHandler(FirstRead(done: echoed))
                            }
                        }
                        .connect(host: "127.0.0.1", port: port).get()
                    try await channel.writeAndFlush(ByteBuffer(repeating: 0x61, count: 1024)).get()
                    try await echoed.futureResult.get()
                    held.append(channel)
                }
                return held
            }
        }
        var all: [any Channel] = []
        for try await held in group { all += held }
        return all
    }
    print("listening=\(channels.count)")
    fflush(nil)
    try await Task.sleep(for: .seconds(3600))
default:
    FileHandle.standardError.write(Data("usage: presence-bench identify|sign|listeners|tls-floor-server|tls-floor-clients --port N [--clients C] [--seconds S] [--password-file F]\n".utf8))
    exit(2)
}

/// TLS 1.3 with a certificate on both sides, as Q2Q's presence connections use; peers
/// are checked by a callback (the server's) or not at all (the clients').
func floorConfiguration(_ identity: Q2QIdentity, server: Bool) throws -> TLSConfiguration {
    let key = try NIOSSLPrivateKey(bytes: Array(identity.privateKey.derRepresentation), format: .der)
    var configuration = server
        ? TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(try identity.certificate.nioCertificate)], privateKey: .privateKey(key))
        : TLSConfiguration.makeClientConfiguration()
    configuration.certificateChain = [.certificate(try identity.certificate.nioCertificate)]
    configuration.privateKey = .privateKey(key)
    configuration.minimumTLSVersion = .tlsv13
    configuration.trustRoots = .certificates([])
    configuration.certificateVerification = server ? .noHostnameVerification : .none
    return configuration
}

final class Echo: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

/// Completes `done` once the 1 KiB echo has come back whole.
final class FirstRead: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let done: EventLoopPromise<Void>
    var awaited = 1024
    init(done: EventLoopPromise<Void>) { self.done = done }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard awaited > 0 else { return }
        awaited -= unwrapInboundIn(data).readableBytes
        if awaited <= 0 { done.succeed() }
    }
}

import Foundation
import NIOCore
import NIOPosix
import Testing
import VertexTestSupport

/// `vertex serve` and `vertex connect` as real processes, across two domains, each
/// method forced in turn.
@Suite("vertex serve / connect processes")
struct StreamCLITests {
    /// A TCP echo server on loopback that half-closes when its client does.
    static func startEcho() async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(data, promise: nil)
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event { context.close(mode: .output, promise: nil) }
        }
    }

    @Test("serve + connect move bytes exactly over tcp and over the relay, alice@a.test to bob@b.test; serve refuses peers it was not told to allow")
    func serveAndConnect() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-streams-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let password = directory.appendingPathComponent("password")
        try "pw\n".write(to: password, atomically: true, encoding: .utf8)
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

        let a = try await CLITests.ServerProcess.start(domain: "a.test", data: directory.appendingPathComponent("a"),
                                                       log: directory.appendingPathComponent("a.log"))
        let b = try await CLITests.ServerProcess.start(domain: "b.test", data: directory.appendingPathComponent("b"),
                                                       log: directory.appendingPathComponent("b.log"),
                                                       extra: ["--peer-server", "a.test=127.0.0.1:\(a.port)"])
        for (user, domain, data) in [("alice", "a.test", "a"), ("carol", "a.test", "a"), ("bob", "b.test", "b")] {
            let home = path("home-\(user)")
            #expect(try await CLITests.vertex(["user", "add", "\(user)@\(domain)", "--data", path(data), "--password-file", password.path]).status == 0)
            for (name, server) in [("a.test", a), ("b.test", b)] {
                _ = try await CLITests.vertex(["servers", "set", name, "127.0.0.1:\(server.port)", "--home", home])
            }
            let registered = try await CLITests.vertex(["register", "\(user)@\(domain)", "--password-file", password.path, "--home", home])
            #expect(registered.status == 0, "\(registered.stderr)")
        }
        let echo = try await Self.startEcho()
        // Without --allow, authorizations or --allow-anyone, nobody may connect: said at once.
        let nobody = try await CLITests.vertex(["serve", "bob@b.test", "echo", "--forward", "127.0.0.1:\(echo.localAddress!.port!)",
                                                "--home", path("home-bob")])
        #expect(nobody.status != 0)
        #expect(nobody.stderr.contains("nobody may connect"), "\(nobody.stderr)")
        let serve = try ChildProcess(CLITests.vertex, ["serve", "bob@b.test", "echo", "--forward", "127.0.0.1:\(echo.localAddress!.port!)",
                                                       "--listen-host", "127.0.0.1", "--allow", "alice@a.test", "--home", path("home-bob"), "-v"],
                                     stderrFile: directory.appendingPathComponent("serve.log"))
        #expect(await serve.nextLine()?.hasPrefix("serving bob@b.test/echo") == true)

        let input = Data(pseudoRandomBytes(3_000_000))
        try input.write(to: directory.appendingPathComponent("input"))
        for method in ["tcp", "relay"] {
            let run = try await ChildProcess.run(ChildProcess.env, ["sh", "-c",
                "'\(CLITests.vertex.path)' connect alice@a.test bob@b.test/echo --method \(method) --home '\(path("home-alice"))' -v < '\(path("input"))'"])
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stderr.contains(method == "tcp" ? "by tcp@127.0.0.1:" : "by virtual"), "\(run.stderr)")
            let output = try await ChildProcess.runCapturingBytes(ChildProcess.env, ["sh", "-c",
                "'\(CLITests.vertex.path)' connect alice@a.test bob@b.test/echo --method \(method) --home '\(path("home-alice"))' < '\(path("input"))'"])
            #expect(output == input, "\(method): \(output.count) bytes back of \(input.count)")
        }
        // carol is verified, but not allowed: refused before any path is offered.
        let carol = try await ChildProcess.run(ChildProcess.env, ["sh", "-c",
            "echo hi | '\(CLITests.vertex.path)' connect carol@a.test bob@b.test/echo --home '\(path("home-carol"))'"])
        #expect(carol.status != 0)
        #expect(carol.stderr.contains("does not accept carol@a.test"), "\(carol.stderr)")
        await serve.stop()
        try await echo.close()
        await b.process.stop()
        await a.process.stop()
    }
}

import Foundation
import Testing
import VertexTestSupport

/// Connections across real NATs: ../shared/tools/netlab builds a small internet in
/// network namespaces (a public server, two sites behind NATs), and the real `vertex`
/// processes run inside it. Needs root, as `.ci/run` has.
@Suite("netlab: connections across real NATs", .serialized)
struct NetlabTests {
    static let netlab = Netlab.tool

    /// One lab, brought up for a test and always taken down.
    struct Lab {
        let name: String

        static func with<T>(natA: String, natB: String, _ body: (Lab) async throws -> T) async throws -> T {
            let lab = Lab(name: "vx\(UInt32.random(in: 0..<1_000_000))")
            let up = try await lab.netlab(["up", "--nat-a", natA, "--nat-b", natB])
            guard up.status == 0 else {
                throw CLITests.CLIFailure("netlab up failed (it needs root): \(up.stderr)\(up.stdout)")
            }
            do {
                let result = try await body(lab)
                _ = try? await lab.netlab(["down"])
                return result
            } catch {
                _ = try? await lab.netlab(["down"])
                throw error
            }
        }

        func netlab(_ arguments: [String], input: String? = nil) async throws -> ChildProcess.Run {
            try await ChildProcess.run(NetlabTests.netlab, ["--name", name] + arguments, input: input)
        }

        /// Runs `vertex` inside `node`'s namespace to completion.
        func vertex(on node: String, _ arguments: [String], input: String? = nil) async throws -> ChildProcess.Run {
            try await netlab(["exec", node, "--", CLITests.vertex.path] + arguments, input: input)
        }

        /// Starts a long-running process inside `node`'s namespace.
        func start(on node: String, _ command: [String], log: URL) throws -> ChildProcess {
            try ChildProcess(NetlabTests.netlab, ["--name", name, "exec", node, "--"] + command, stderrFile: log)
        }
    }

    /// A presence server on the lab's public server, alice at site A and bob at site B
    /// (registered there, through their NATs), bob serving "echo"; returns what
    /// `vertex connect -v` said and whether the bytes came back.
    static func connectAcross(natA: String, natB: String) async throws -> (stderr: String, echoed: Bool) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-netlab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let password = directory.appendingPathComponent("password")
        try "pw\n".write(to: password, atomically: true, encoding: .utf8)

        return try await Lab.with(natA: natA, natB: natB) { lab in
            let server = try lab.start(on: "server", [CLITests.vertex.path, "server", "--domain", "example.test", "--data", path("server"),
                                                      "--bind", "198.51.100.10", "--port", "8788"],
                                       log: directory.appendingPathComponent("server.log"))
            let ready = await server.nextLine()
            guard ready?.contains("listening on 198.51.100.10:8788") == true else {
                throw CLITests.CLIFailure("the server did not start: \(ready ?? "") \((try? String(contentsOfFile: path("server.log"), encoding: .utf8)) ?? "")")
            }
            for (user, node) in [("alice", "a"), ("bob", "b")] {
                let home = path("home-\(user)")
                #expect(try await CLITests.vertex(["user", "add", "\(user)@example.test", "--data", path("server"), "--password-file", password.path]).status == 0)
                #expect(try await CLITests.vertex(["servers", "set", "example.test", "198.51.100.10:8788", "--home", home]).status == 0)
                let registered = try await lab.vertex(on: node, ["register", "\(user)@example.test", "--password-file", password.path, "--home", home])
                #expect(registered.status == 0, "register \(user) from site \(node): \(registered.stderr)")
            }
            // bob's service: an echo server on his own loopback, exposed with `vertex serve`.
            let echo = try lab.start(on: "b", ["python3", "-c", Self.echoServer], log: directory.appendingPathComponent("echo.log"))
            #expect(await echo.nextLine() == "ready")
            let serve = try lab.start(on: "b", [CLITests.vertex.path, "serve", "bob@example.test", "echo", "--forward", "127.0.0.1:7007",
                                                "--home", path("home-bob"), "-v"], log: directory.appendingPathComponent("serve.log"))
            #expect(await serve.nextLine()?.hasPrefix("serving bob@example.test/echo") == true)

            let text = "across the NATs \(UUID().uuidString)\n"
            let run = try await lab.vertex(on: "a", ["connect", "alice@example.test", "bob@example.test/echo", "-v", "--home", path("home-alice")],
                                           input: text)
            await serve.stop()
            await echo.stop()
            await server.stop()
            #expect(run.status == 0, "\(run.stderr)")
            return (run.stderr, run.stdout == text)
        }
    }

    static let echoServer = """
        import socket, threading
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 7007)); s.listen(16); print("ready", flush=True)
        def serve(c):
            while True:
                data = c.recv(65536)
                if not data: break
                c.sendall(data)
            c.shutdown(socket.SHUT_WR); c.close()
        while True:
            c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
        """

    @Test("both sites behind symmetric NATs: the relay carries the stream")
    func symmetricNATsUseTheRelay() async throws {
        let (stderr, echoed) = try await Self.connectAcross(natA: "symmetric", natB: "symmetric")
        #expect(echoed)
        #expect(stderr.contains("by virtual"), "\(stderr)")
    }

    @Test("a listener on the public side is reached directly: tcp wins")
    func publicListenerUsesTCP() async throws {
        let (stderr, echoed) = try await Self.connectAcross(natA: "cone", natB: "none")
        #expect(echoed)
        #expect(stderr.contains("by tcp@192.0.2.10:"), "\(stderr)")
    }
}

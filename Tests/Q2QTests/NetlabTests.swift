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

        /// With `ipv6`, the lab has IPv6 too (`netlab up --ipv6`), and the sites resolve
        /// ``presenceName`` to the server's IPv4 and IPv6 addresses (an /etc/hosts of
        /// their own, which `ip netns exec` puts in place of the machine's).
        static func with<T>(natA: String, natB: String, ipv6: Bool = false, _ body: (Lab) async throws -> T) async throws -> T {
            let lab = Lab(name: "vx\(UInt32.random(in: 0..<1_000_000))")
            let up = try await lab.netlab(["up", "--nat-a", natA, "--nat-b", natB] + (ipv6 ? ["--ipv6"] : []))
            guard up.status == 0 else {
                throw CLITests.CLIFailure("netlab up failed (it needs root): \(up.stderr)\(up.stdout)")
            }
            let hostsFiles = ipv6 ? ["a", "b"].map { URL(fileURLWithPath: "/etc/netns/\(lab.name)-\($0)") } : []
            func down() async {
                _ = try? await lab.netlab(["down"])
                for directory in hostsFiles { try? FileManager.default.removeItem(at: directory) }
            }
            do {
                for directory in hostsFiles {
                    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                    try "198.51.100.10 \(Self.presenceName)\n2001:db8:5::10 \(Self.presenceName)\n"
                        .write(to: directory.appendingPathComponent("hosts"), atomically: true, encoding: .utf8)
                }
                let result = try await body(lab)
                await down()
                return result
            } catch {
                await down()
                throw error
            }
        }

        /// The presence server's name in an IPv6 lab: both its addresses.
        static let presenceName = "presence.example.test"

        func netlab(_ arguments: [String], input: String? = nil) async throws -> ChildProcess.Run {
            try await ChildProcess.run(NetlabTests.netlab, ["--name", name] + arguments, input: input)
        }

        /// `netlab` for a command that leaves a process running (`portmap a on`): with
        /// every descriptor above 2 closed first, so that the process it starts does not
        /// inherit (and hold open for good) the pipes this run's output is read from.
        func netlabStartingDaemon(_ arguments: [String]) async throws -> ChildProcess.Run {
            let closeAndRun = #"for fd in /proc/self/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-" 2>/dev/null; done; exec "$@""#
            return try await ChildProcess.run(URL(fileURLWithPath: "/bin/bash"), ["-c", closeAndRun, "bash", NetlabTests.netlab.path, "--name", name] + arguments)
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

    /// What a second connection, made after the first, differs in.
    enum SecondConnection {
        /// UDP is blocked at this site for the first connection, unblocked for the second.
        case afterUnblockingUDP(at: String)
        /// The second connection may use only these methods (`--method`).
        case restrictedTo(methods: String)
    }

    /// A lab with a presence server on its public server, alice at site A and bob at
    /// site B (registered there, through their NATs), bob serving "echo" with `vertex
    /// serve -v` (and `serveArguments`); `portmap` names the sites whose NAT runs a
    /// NAT-PMP gateway from the start.
    struct Across {
        let lab: Lab
        /// bob's `vertex serve`.
        let serve: ChildProcess
        let directory: URL
        /// 150 KB: enough to cross the path in many datagrams or relay boxes.
        let text = (0..<4_000).map { _ in UUID().uuidString }.joined(separator: "\n") + "\n"

        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

        /// `vertex connect -v` from alice to bob's echo, fed ``text``; whether it came back.
        func connect(_ extra: [String] = []) async throws -> (stderr: String, echoed: Bool) {
            let run = try await lab.vertex(on: "a", ["connect", "alice@example.test", "bob@example.test/echo", "-v", "--home", path("home-alice")] + extra,
                                           input: text)
            return (run.stderr, run.status == 0 && run.stdout == text)
        }
    }

    /// With `ipv6` the lab has IPv6, the server listens on both its first addresses, and
    /// users reach it by name (both families) unless `servers` names another address.
    static func across<T>(natA: String, natB: String, ipv6: Bool = false, servers: [String: String] = [:], portmap: [String] = [],
                          serverArguments: [String] = [], serveArguments: [String] = [],
                          _ body: (Across) async throws -> T) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-netlab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let password = directory.appendingPathComponent("password")
        try "pw\n".write(to: password, atomically: true, encoding: .utf8)

        return try await Lab.with(natA: natA, natB: natB, ipv6: ipv6) { lab in
            for site in portmap {
                let gateway = try await lab.netlabStartingDaemon(["portmap", site, "on"])
                #expect(gateway.status == 0, "netlab portmap \(site) on: \(gateway.stderr)")
            }
            let server = try lab.start(on: "server", [CLITests.vertex.path, "server", "--domain", "example.test", "--data", path("server"),
                                                      "--bind", "198.51.100.10", "--port", "8788"] + (ipv6 ? ["--bind", "2001:db8:5::10"] : []) + serverArguments,
                                       log: directory.appendingPathComponent("server.log"))
            let ready = await server.nextLine()
            guard ready?.contains("listening on 198.51.100.10:8788") == true else {
                throw CLITests.CLIFailure("the server did not start: \(ready ?? "") \((try? String(contentsOfFile: path("server.log"), encoding: .utf8)) ?? "")")
            }
            for (user, node) in [("alice", "a"), ("bob", "b")] {
                let home = path("home-\(user)")
                #expect(try await CLITests.vertex(["user", "add", "\(user)@example.test", "--data", path("server"), "--password-file", password.path]).status == 0)
                let server = servers[user] ?? (ipv6 ? "\(Lab.presenceName):8788" : "198.51.100.10:8788")
                #expect(try await CLITests.vertex(["servers", "set", "example.test", server, "--home", home]).status == 0)
                let registered = try await lab.vertex(on: node, ["register", "\(user)@example.test", "--password-file", password.path, "--home", home])
                #expect(registered.status == 0, "register \(user) from site \(node): \(registered.stderr)")
            }
            // bob's service: an echo server on his own loopback, exposed with `vertex serve`.
            let echo = try lab.start(on: "b", ["python3", "-c", Self.echoServer], log: directory.appendingPathComponent("echo.log"))
            #expect(await echo.nextLine() == "ready")
            let serve = try lab.start(on: "b", [CLITests.vertex.path, "serve", "bob@example.test", "echo", "--forward", "127.0.0.1:7007", "--allow", "alice@example.test",
                                                "--home", path("home-bob"), "-v"] + serveArguments, log: directory.appendingPathComponent("serve.log"))
            #expect(await serve.nextLine()?.hasPrefix("serving bob@example.test/echo") == true)
            do {
                let result = try await body(Across(lab: lab, serve: serve, directory: directory))
                await serve.stop()
                await echo.stop()
                await server.stop()
                return result
            } catch {
                await serve.stop()
                await echo.stop()
                await server.stop()
                throw error
            }
        }
    }

    /// What `vertex connect -v` said and whether the bytes came back across the lab of
    /// ``across(natA:natB:portmap:serveArguments:_:)``, for one connection and, with
    /// `second`, for a second one.
    static func connectAcross(natA: String, natB: String, then second: SecondConnection? = nil) async throws
        -> (stderr: String, echoed: Bool, second: (stderr: String, echoed: Bool)?) {
        try await across(natA: natA, natB: natB) { across in
            if case .afterUnblockingUDP(let site) = second {
                let blocked = try await across.lab.netlab(["block", site, "udp"])
                #expect(blocked.status == 0, "\(blocked.stderr)")
            }
            let first = try await across.connect()
            var secondRun: (stderr: String, echoed: Bool)?
            switch second {
            case .afterUnblockingUDP(let site):
                let unblocked = try await across.lab.netlab(["unblock", site, "udp"])
                #expect(unblocked.status == 0, "\(unblocked.stderr)")
                secondRun = try await across.connect()
            case .restrictedTo(let methods):
                secondRun = try await across.connect(["--method", methods])
            case nil:
                break
            }
            #expect(first.echoed, "\(first.stderr)")
            return (first.stderr, first.echoed, secondRun)
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

    /// The ways alice at site A reaches bob at site B, by NAT type. Without a symmetric
    /// NAT the path is direct: tcp when bob is on the public side (or ptcp, which starts
    /// at the same time), ptcp by hole punching when bob is behind a cone NAT. A
    /// symmetric NAT at bob's site maps his SYNs to a new port per destination: only a
    /// public alice can take them (rptcp, bob connecting back). A symmetric NAT facing a
    /// cone NAT defeats punching (the cone side filters the unknown port): only the
    /// relay ("virtual") carries those.
    static let expectations: [(a: String, b: String, direct: Set<String>)] = [
        ("none", "none", ["tcp", "ptcp"]), ("none", "cone", ["ptcp"]), ("none", "symmetric", ["rptcp"]),
        ("cone", "none", ["tcp", "ptcp"]), ("cone", "cone", ["ptcp"]), ("cone", "symmetric", []),
        ("symmetric", "none", ["tcp", "ptcp"]), ("symmetric", "cone", []), ("symmetric", "symmetric", []),
    ]

    /// "connected to bob@example.test/echo by ptcp@192.0.2.10:41000" → "ptcp".
    static func method(in stderr: String) -> String? {
        let line = stderr.split(separator: "\n").first { $0.hasPrefix("connected to ") }
        return line?.components(separatedBy: " by ").last?.split(separator: "@").first.map(String.init)
    }

    /// Each pair is tried twice: once racing every method, once with only the direct
    /// methods that should work there. The race must pick a direct method where none
    /// works, the relay; where a direct one works, it must pick that or (the machine
    /// being loaded by other suites, the relay starts only 500 ms later) the relay,
    /// and the direct-only connection must then succeed by the expected method. How
    /// often direct wins on an idle machine is measured by `scripts/bench/nat-matrix`.
    @Test("every pair of NAT types connects, byte-exact over end-to-end TLS, by the expected method",
          .serialized, arguments: 0..<9)
    func matrix(index: Int) async throws {
        let (a, b, direct) = Self.expectations[index]
        let directOnly = direct.isEmpty ? nil : direct.sorted().joined(separator: ",")
        let (stderr, echoed, second) = try await Self.connectAcross(
            natA: a, natB: b, then: directOnly.map { .restrictedTo(methods: $0) })
        #expect(echoed, "A \(a), B \(b)")
        let raced = Self.method(in: stderr)
        #expect(raced.map(direct.union(["virtual"]).contains) == true, "A \(a), B \(b): \(stderr)")
        if direct.isEmpty {
            #expect(raced == "virtual", "A \(a), B \(b): \(stderr)")
        } else {
            #expect(second?.echoed == true, "A \(a), B \(b), direct only")
            #expect(second.flatMap { Self.method(in: $0.stderr) }.map(direct.contains) == true,
                    "A \(a), B \(b), direct only: \(second?.stderr ?? "")")
        }
    }

    @Test("UDP blocked at alice's site: the relay connects cone to cone; unblocked, the next connection is direct")
    func udpBlocked() async throws {
        let (stderr, echoed, after) = try await Self.connectAcross(natA: "cone", natB: "cone", then: .afterUnblockingUDP(at: "a"))
        #expect(echoed)
        #expect(stderr.contains("by virtual"), "\(stderr)")
        #expect(stderr.contains("relayed: UDP to the presence server gets no answer"), "\(stderr)")
        #expect(after?.echoed == true)
        #expect(after?.stderr.contains("by ptcp@") == true, "\(after?.stderr ?? "")")
    }
}

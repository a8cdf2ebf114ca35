import Foundation
import NIOCore
import Q2Q
import Testing
import VertexTestSupport

/// `vertex server --http`: Prometheus metrics and the status page, from a real server
/// process, read by prometheus_client's parser and by headless Chromium.
@Suite("vertex server --http (metrics and status page)")
struct PresenceHTTPTests {
    static let bob = try! Q2QAddress("bob@example.test")
    static let alice = try! Q2QAddress("alice@example.test")

    /// A server process with --http, alice and bob with accounts, and a home for each.
    static func withServer(_ body: (_ server: CLITests.ServerProcess, _ http: String, _ node: (Q2QAddress) async throws -> Q2QNode) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-http-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "pw\n".write(to: directory.appendingPathComponent("password"), atomically: true, encoding: .utf8)
        let server = try await CLITests.ServerProcess.start(data: directory.appendingPathComponent("data"),
                                                            log: directory.appendingPathComponent("server.log"), extra: ["--http", "0"])
        defer { Task { await server.process.stop() } }
        // After the domain lines: "data in …", then the HTTP address.
        var http: String?
        while http == nil, let line = await server.process.nextLine(timeout: .seconds(30)) {
            if line.hasPrefix("metrics and status page on ") { http = String(line.split(separator: " ").last!) }
        }
        let url = try #require(http, "vertex server did not say where its status page is")
        for user in [alice, bob] {
            let added = try await CLITests.vertex(["user", "add", user.description, "--data", directory.appendingPathComponent("data").path,
                                                   "--password-file", directory.appendingPathComponent("password").path])
            #expect(added.status == 0, "\(added.stderr)")
        }
        var nodes: [Q2QNode] = []
        try await body(server, url) { address in
            let store = try SQLiteNodeStore(home: directory.appendingPathComponent("home-\(address.resource)"))
            try await store.setServer(HostPort(host: "127.0.0.1", port: server.port), for: address.domain)
            _ = try await PresenceClient(store: store).register(address, password: Array("pw".utf8))
            let node = Q2QNode(store: store, configuration: .init(listenHost: "127.0.0.1"))
            nodes.append(node)
            return node
        }
        for node in nodes { await node.shutdown() }
    }

    /// The samples of `/metrics`, as prometheus_client's text parser reads them.
    static func metrics(_ url: String) async throws -> [String: Double] {
        let run = try await ChildProcess.run(ChildProcess.env, ["python3", script.path, "metrics", url], timeout: .seconds(60))
        #expect(run.status == 0, "\(run.stderr)")
        return try JSONDecoder().decode([String: Double].self, from: Data(run.stdout.utf8))
    }

    static var script: URL { CLITests.packageRoot.appendingPathComponent("Tests/Browser/presence_status.py") }

    @Test("/metrics parses with prometheus_client; listeners, sessions, identify, sign, inbound and relay bytes move", .timeLimit(.minutes(3)))
    func metrics() async throws {
        try await Self.withServer { _, url, makeNode in
            let before = try await Self.metrics(url)
            #expect(before["vertex_presence_listeners"] == 0)
            #expect(before["vertex_presence_relay_bytes_total"] == 0)
            #expect(before["vertex_presence_cluster_peers_up"] == 0)
            let bobNode = try await makeNode(Self.bob)
            let aliceNode = try await makeNode(Self.alice)
            let listener = try await bobNode.listen(as: Self.bob, service: "echo")
            let echoing = echo(listener)
            defer { echoing.cancel() }
            let joined = try await Self.metrics(url)
            #expect(joined["vertex_presence_listeners"] == 1)
            #expect((joined["vertex_presence_sessions"] ?? 0) >= 1)
            #expect(joined[#"vertex_presence_sign_total{result="issued"}"#] == 2)
            #expect((joined["vertex_presence_identify_total"] ?? 0) >= 2)

            let bytes = pseudoRandomBytes(300_000)
            let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "echo", methods: .relay)
            #expect(stream.method == .virtual)
            #expect(try await roundTrip(stream, bytes) == bytes)
            let relayed = try await Self.metrics(url)
            // Both directions, as TLS records (a little more than the plaintext).
            #expect((relayed["vertex_presence_relay_bytes_total"] ?? 0) >= 600_000, "\(relayed)")
            #expect((relayed[#"vertex_presence_inbound_total{result="answered"}"#] ?? 0) >= 1)
            #expect((relayed["vertex_presence_inbound_duration_seconds_count"] ?? 0) >= 1)
            #expect((relayed[#"vertex_presence_database_duration_seconds_count{operation="password_hash"}"#] ?? 0) == 2)

            await #expect(throws: (any Error).self) {
                _ = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: "nobody here")
            }
            let missed = try await Self.metrics(url)
            #expect(missed[#"vertex_presence_inbound_total{result="not_listening"}"#] == 1)
            await listener.close()
        }
    }

    @Test("the status page in headless Chromium: it renders, and its listener count changes when a listener joins",
          .timeLimit(.minutes(3)))
    func statusPage() async throws {
        try await Self.withServer { _, url, makeNode in
            let screenshots = CLITests.packageRoot.appendingPathComponent(".build/screenshots")
            try FileManager.default.createDirectory(at: screenshots, withIntermediateDirectories: true)
            let shot = screenshots.appendingPathComponent("presence-status.png")
            try? FileManager.default.removeItem(at: shot)
            let page = try ChildProcess(ChildProcess.env, ["python3", Self.script.path, "page", url, shot.path])
            defer { Task { await page.stop() } }
            #expect(await page.nextLine(timeout: .seconds(60)) == "listeners: 0")
            let bobNode = try await makeNode(Self.bob)
            let listener = try await bobNode.listen(as: Self.bob, service: "echo")
            #expect(await page.nextLine(timeout: .seconds(60)) == "listeners: 1")
            #expect(await page.nextLine(timeout: .seconds(30)) == "ok")
            #expect(await page.exited.value == 0)
            #expect(FileManager.default.fileExists(atPath: shot.path))
            await listener.close()
        }
    }

    @Test("bound to loopback, the status page answers loopback names only (no DNS rebinding)")
    func loopbackOnly() async throws {
        try await Self.withServer { _, url, _ in
            let port = try #require(URLComponents(string: url)?.port)
            for (host, expected) in [("127.0.0.1:\(port)", "200 OK"), ("localhost:\(port)", "200 OK"), ("evil.test:\(port)", "403 Forbidden")] {
                let request = "GET /status.json HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n"
                let (bytes, _) = try await RawSocket.exchange(port: port, bytes: Array(request.utf8), window: .seconds(10))
                let answer = String(decoding: bytes, as: UTF8.self)
                #expect(answer.hasPrefix("HTTP/1.1 \(expected)"), "\(host): \(answer.prefix(200))")
            }
        }
    }
}

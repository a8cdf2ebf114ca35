import Foundation
import Q2Q
import Testing
import VertexTestSupport

/// Real `vertex server` processes on one PostgreSQL database.
extension PostgresStoreTests {
    /// Presence nodes for example.test on `database`, sharing a sealing key file, with
    /// `users` created (password "pw") through the CLI.
    static func withNodes(_ count: Int, on database: PrivatePostgres, users: [String], extra: (Int) -> [String] = { _ in [] },
                          _ body: (_ nodes: [CLITests.ServerProcess], _ directory: URL) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-pg-nodes-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "pw\n".write(to: directory.appendingPathComponent("password"), atomically: true, encoding: .utf8)
        let shared = ["--database", database.url, "--ca-key-file", directory.appendingPathComponent("ca-sealing.key").path]
        var nodes: [CLITests.ServerProcess] = []
        do {
            for index in 0..<count {
                nodes.append(try await CLITests.ServerProcess.start(data: directory.appendingPathComponent("data-\(index)"),
                                                                    log: directory.appendingPathComponent("node-\(index).log"),
                                                                    extra: shared + extra(index), niceness: 10))
            }
            #expect(Set(nodes.map(\.fingerprint)).count == 1, "every node serves the same CA")
            for user in users {
                let added = try await CLITests.vertex(["user", "add", user, "--password-file", directory.appendingPathComponent("password").path]
                                                      + shared.prefix(2))
                #expect(added.status == 0, "\(added.stderr)")
            }
            try await body(nodes, directory)
        } catch {
            for node in nodes { await node.process.stop() }
            throw error
        }
        for node in nodes { await node.process.stop() }
    }

    /// Registers `address` through `server` with `vertex register` (a process of its own:
    /// the signing load stays out of the test process, whose other tests keep their
    /// deadlines), trying again with backoff while the server says to (its password
    /// checks are few at once, and one source address is rate-limited) or closes
    /// connections past its cap on connections not yet authenticated. The serial.
    static func register(_ address: String, through server: Int, home: URL, directory: URL,
                         patience: Duration = .seconds(240)) async throws -> String {
        let deadline = ContinuousClock.now + patience
        var backoff = 100
        while true {
            // At a lower priority than the test process: this test's load must not make
            // the deadlines of the tests running beside it.
            let run = try await ChildProcess.run(ChildProcess.env, [
                "nice", "-n", "10", CLITests.vertex.path, "register", address, "--server", "127.0.0.1:\(server)",
                "--home", home.path, "--password-file", directory.appendingPathComponent("password").path,
            ])
            if run.status == 0, let serial = run.stdout.split(separator: " ").drop(while: { $0 != "certificate" }).dropFirst().first {
                return String(serial.trimmingCharacters(in: .punctuationCharacters))
            }
            guard Self.isTransient(run.stderr), ContinuousClock.now < deadline else {
                throw CLITests.CLIFailure("vertex register \(address) failed: \(run.stderr)")
            }
            // Exponential backoff with jitter, as a client of a busy server should.
            try await Task.sleep(for: .milliseconds(Int.random(in: backoff / 2...backoff)))
            backoff = min(backoff * 2, 2_000)
        }
    }

    /// What a client tries again after: the server asked it to, or it closed a
    /// connection from a source address past its cap on connections not yet authenticated.
    static func isTransient(_ error: String) -> Bool {
        ["try again", "closed", "connection reset", "connection lost"].contains { error.contains($0) }
    }

    @Test("two nodes on one database: 200 signs, 20 at a time split over both; serials distinct, each node accepts the other's certificates",
          .timeLimit(.minutes(6)))
    func concurrentSigns() async throws {
        try await Self.withDatabase { database in
            let users = (0..<20).map { "user\($0)@example.test" }
            try await Self.withNodes(2, on: database, users: users) { nodes, directory in
                // 200 registrations from 20 client processes at a time, 10 on each node
                // (each node checks 2 passwords at once and takes 10 tries at once from
                // one source address; clients retry, with backoff, what it turns away).
                let serials = try await withThrowingTaskGroup(of: String.self) { group in
                    var started = 0
                    func start() {
                        let index = started
                        started += 1
                        group.addTask {
                            try await Self.register(users[index % users.count], through: nodes[index % 2].port,
                                                    home: directory.appendingPathComponent("home-\(index)"), directory: directory)
                        }
                    }
                    while started < 20 { start() }
                    var serials: [String] = []
                    for try await serial in group {
                        serials.append(serial)
                        if started < 200 { start() }
                    }
                    return serials
                }
                #expect(serials.count == 200)
                #expect(Set(serials).count == 200)
                // Every certificate recorded once, whichever node signed it.
                let listed = try await CLITests.vertex(["cert", "list", "--database", database.url])
                #expect(listed.status == 0, "\(listed.stderr)")
                for serial in serials {
                    #expect(listed.stdout.contains(serial))
                }
                // A certificate from either node secures a connection on the other.
                for index in 0..<10 {
                    let other = nodes[(index + 1) % 2].port
                    let client = PresenceClient(store: try SQLiteNodeStore(home: directory.appendingPathComponent("home-\(index)")))
                    let identity = try #require(try await client.store.identities().first)
                    try await client.withConnection(to: HostPort(host: "127.0.0.1", port: other)) { connection in
                        let authority = try await client.identify("example.test", on: connection)
                        try await client.secure(connection, domain: "example.test", authority: authority, as: identity)
                    }
                }
            }
        }
    }

    @Test("PostgreSQL restarted under load: signs meanwhile fail with one clear line, the nodes carry on, nothing stored is lost",
          .timeLimit(.minutes(4)))
    func databaseRestart() async throws {
        try await Self.withDatabase { database in
            let users = (0..<4).map { "user\($0)@example.test" }
            try await Self.withNodes(2, on: database, users: users) { nodes, directory in
                var before: [String] = []
                for (index, user) in users.enumerated() {
                    before.append(try await Self.register(user, through: nodes[index % 2].port,
                                                          home: directory.appendingPathComponent("before-\(index)"), directory: directory))
                }
                let revoked = before[0]
                #expect(try await CLITests.vertex(["cert", "revoke", revoked, "--database", database.url]).status == 0)

                // Load on both nodes while the database goes away for 7 s (longer than the
                // store waits for it) and comes back.
                let stop = ContinuousClock.now + .seconds(15)
                let outcomes = Task {
                    try await withThrowingTaskGroup(of: [String].self) { group in
                        for worker in 0..<4 {
                            group.addTask {
                                var seen: [String] = []
                                var round = 0
                                while ContinuousClock.now < stop {
                                    let run = try await ChildProcess.run(ChildProcess.env, [
                                        "nice", "-n", "10", CLITests.vertex.path,
                                        "register", users[worker], "--server", "127.0.0.1:\(nodes[worker % 2].port)",
                                        "--home", directory.appendingPathComponent("load-\(worker)-\(round)").path,
                                        "--password-file", directory.appendingPathComponent("password").path,
                                    ])
                                    if run.status == 0 {
                                        seen.append("ok")
                                    } else {
                                        seen.append(run.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
                                        try await Task.sleep(for: .milliseconds(100))
                                    }
                                    round += 1
                                }
                                return seen
                            }
                        }
                        return try await group.reduce(into: []) { $0 += $1 }
                    }
                }
                try await Task.sleep(for: .seconds(2))
                try await database.restart(after: .seconds(7))
                let seen = try await outcomes.value
                let failures = seen.filter { $0 != "ok" && !$0.contains("try again") }
                let outage = seen.filter { $0.contains("cannot reach its database") }
                #expect(seen.contains("ok"))
                #expect(failures.allSatisfy { !$0.contains("\n") }, "\(failures)")
                #expect(!outage.isEmpty, "no sign met the outage: \(Set(seen))")
                // Both nodes are still up, and sign again.
                for node in nodes { #expect(node.process.process.isRunning) }
                for (index, user) in users.prefix(2).enumerated() {
                    _ = try await Self.register(user, through: nodes[index].port, home: directory.appendingPathComponent("after-\(index)"),
                                                directory: directory, patience: .seconds(30))
                }
                // Nothing stored before was lost.
                let listed = try await CLITests.vertex(["cert", "list", "--database", database.url])
                for serial in before { #expect(listed.stdout.contains(serial)) }
                let users = try await CLITests.vertex(["user", "list", "--database", database.url])
                #expect(users.stdout.split(separator: "\n").count == 4, "\(users.stdout)")
                let revokedLine = listed.stdout.split(separator: "\n").first { $0.contains(revoked) }
                #expect(revokedLine?.contains("revoked") == true, "\(revokedLine ?? "")")
            }
        }
    }

    /// `GET path` on a node's HTTP port, decoded.
    static func status(_ port: Int) async throws -> PresenceStatus {
        let request = "GET /status.json HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n"
        let (bytes, _) = try await RawSocket.exchange(port: port, bytes: Array(request.utf8), window: .seconds(10))
        let text = String(decoding: bytes, as: UTF8.self)
        let body = try #require(text.range(of: "\r\n\r\n").map { text[$0.upperBound...] }, "\(text)")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(PresenceStatus.self, from: Data(body.utf8))
    }

    @Test("nodes on one database know each other from heartbeats; a node killed with SIGKILL is gone for the others within seconds",
          .timeLimit(.minutes(2)))
    func membership() async throws {
        try await Self.withDatabase { database in
            try await Self.withNodes(2, on: database, users: [], extra: { ["--http", "0", "--node-name", "node-\($0)"] }) { nodes, _ in
                var ports: [Int] = []
                for node in nodes {
                    while let line = await node.process.nextLine(timeout: .seconds(30)) {
                        if line.hasPrefix("metrics and status page on "), let port = URLComponents(string: String(line.split(separator: " ").last!))?.port {
                            ports.append(port)
                            break
                        }
                    }
                }
                try #require(ports.count == 2)
                var first = try await Self.status(ports[0])
                for _ in 0..<100 where first.peers.isEmpty {
                    try await Task.sleep(for: .milliseconds(100))
                    first = try await Self.status(ports[0])
                }
                #expect(first.node == "node-0")
                #expect(first.peers.map(\.name) == ["node-1"])
                #expect(first.peers.first?.address == "127.0.0.1:\(nodes[1].port)")
                #expect(try await Self.status(ports[1]).peers.map(\.name) == ["node-0"])
                // kill -9: no goodbye; its heartbeats stop.
                await nodes[1].process.stop()
                let killed = ContinuousClock.now
                while try await !Self.status(ports[0]).peers.isEmpty {
                    try await Task.sleep(for: .milliseconds(200))
                }
                let gone = ContinuousClock.now - killed
                #expect(gone < .seconds(8), "node-1 counted as up for \(gone) after it died")
            }
        }
    }
}

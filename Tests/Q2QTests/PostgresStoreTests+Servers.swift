import Foundation
import Q2Q
import Testing
import VertexTestSupport

/// Real `vertex server` processes on one PostgreSQL database.
extension PostgresStoreTests {
    /// Presence nodes for example.test on `database`, sharing a sealing key file, with
    /// `users` created (password "pw") through the CLI.
    static func withNodes(_ count: Int, on database: PrivatePostgres, users: [String],
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
                                                                    log: directory.appendingPathComponent("node-\(index).log"), extra: shared))
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

    /// Registers `address` through `server`, trying again while the server says to
    /// (its password checks are few at once, and one source address is rate-limited).
    static func register(_ address: Q2QAddress, through server: Int, home: URL, patience: Duration = .seconds(120)) async throws -> Q2QIdentity {
        let client = PresenceClient(store: try SQLiteNodeStore(home: home))
        let deadline = ContinuousClock.now + patience
        var backoff = 50
        while true {
            do {
                return try await client.register(address, password: Array("pw".utf8), server: HostPort(host: "127.0.0.1", port: server))
            } catch where Self.isTransient("\(error)") && ContinuousClock.now < deadline {
                // Exponential backoff with jitter, as a client of a busy server should.
                try await Task.sleep(for: .milliseconds(Int.random(in: backoff / 2...backoff)))
                backoff = min(backoff * 2, 2_000)
            }
        }
    }

    /// What a client tries again after: the server asked it to, or it closed a
    /// connection from a source address past its cap on connections not yet authenticated.
    static func isTransient(_ error: String) -> Bool {
        ["try again", "closed", "connection reset", "connection lost"].contains { error.contains($0) }
    }

    @Test("two nodes on one database: 200 signs at once split over both; serials distinct, each node accepts the other's certificates",
          .timeLimit(.minutes(6)))
    func concurrentSigns() async throws {
        try await Self.withDatabase { database in
            let users = (0..<20).map { "user\($0)@example.test" }
            try await Self.withNodes(2, on: database, users: users) { nodes, directory in
                let identities = try await withThrowingTaskGroup(of: Q2QIdentity.self) { group in
                    for index in 0..<200 {
                        group.addTask {
                            try await Self.register(try Q2QAddress(users[index % users.count]), through: nodes[index % 2].port,
                                                    home: directory.appendingPathComponent("home-\(index)"))
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(identities.count == 200)
                #expect(Set(identities.map(\.certificate.serial)).count == 200)
                // Every certificate recorded once, whichever node signed it.
                let listed = try await CLITests.vertex(["cert", "list", "--database", database.url])
                #expect(listed.status == 0, "\(listed.stderr)")
                for identity in identities {
                    #expect(listed.stdout.contains(identity.certificate.serial))
                }
                // A certificate from either node secures a connection on the other.
                for (index, identity) in identities.prefix(10).enumerated() {
                    let other = nodes[(index + 1) % 2].port
                    let client = PresenceClient(store: try SQLiteNodeStore(home: directory.appendingPathComponent("home-\(index)")))
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
                var before: [Q2QIdentity] = []
                for (index, user) in users.enumerated() {
                    before.append(try await Self.register(try Q2QAddress(user), through: nodes[index % 2].port,
                                                          home: directory.appendingPathComponent("before-\(index)")))
                }
                let revoked = before[0].certificate.serial
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
                                    let client = PresenceClient(store: try SQLiteNodeStore(home: directory.appendingPathComponent("load-\(worker)-\(round)")))
                                    do {
                                        _ = try await client.register(try Q2QAddress(users[worker]), password: Array("pw".utf8),
                                                                      server: HostPort(host: "127.0.0.1", port: nodes[worker % 2].port))
                                        seen.append("ok")
                                    } catch {
                                        seen.append("\(error)")
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
                    _ = try await Self.register(try Q2QAddress(user), through: nodes[index].port,
                                                home: directory.appendingPathComponent("after-\(index)"), patience: .seconds(30))
                }
                // Nothing stored before was lost.
                let listed = try await CLITests.vertex(["cert", "list", "--database", database.url])
                for identity in before { #expect(listed.stdout.contains(identity.certificate.serial)) }
                let users = try await CLITests.vertex(["user", "list", "--database", database.url])
                #expect(users.stdout.split(separator: "\n").count == 4, "\(users.stdout)")
                let revokedLine = listed.stdout.split(separator: "\n").first { $0.contains(revoked) }
                #expect(revokedLine?.contains("revoked") == true, "\(revokedLine ?? "")")
            }
        }
    }
}

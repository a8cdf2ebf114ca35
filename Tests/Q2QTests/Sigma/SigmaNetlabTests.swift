import Foundation
import Testing
import VertexTestSupport

extension NetlabTests {
    /// A seeder on the public server host, downloaders at site A (cone NAT) and site B
    /// (symmetric NAT): A and B reach the seeder directly, and each other only through
    /// the relay; both finish byte-exact, trading pieces over whatever path works.
    @Test("sigma across NATs: holders at a cone site, a symmetric site and on the server host all finish")
    func sigmaAcrossNATs() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-netlab-sigma-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let password = directory.appendingPathComponent("password")
        try "pw\n".write(to: password, atomically: true, encoding: .utf8)
        try Data(pseudoRandomBytes(4 << 20, seed: 31)).write(to: URL(fileURLWithPath: path("film.bin")))

        try await Lab.with(natA: "cone", natB: "symmetric") { lab in
            let server = try lab.start(on: "server", [CLITests.vertex.path, "server", "--domain", "example.test", "--data", path("server"),
                                                      "--bind", "198.51.100.10", "--port", "8788"],
                                       log: directory.appendingPathComponent("server.log"))
            #expect(await server.nextLine()?.contains("listening on 198.51.100.10:8788") == true)
            let sites = [("seed", "server"), ("alice", "a"), ("bob", "b")]
            for (user, node) in sites {
                let home = path("home-\(user)")
                #expect(try await CLITests.vertex(["user", "add", "\(user)@example.test", "--data", path("server"), "--password-file", password.path]).status == 0)
                #expect(try await CLITests.vertex(["servers", "set", "example.test", "198.51.100.10:8788", "--home", home]).status == 0)
                let registered = try await lab.vertex(on: node, ["register", "\(user)@example.test", "--password-file", password.path, "--home", home])
                #expect(registered.status == 0, "register \(user) at \(node): \(registered.stderr)")
            }
            // The seeder uploads slowly, so the two sites must trade with each other.
            let seeder = try lab.start(on: "server", [CLITests.vertex.path, "sigma", "share", path("film.bin"), "--as", "seed@example.test",
                                                      "--allow", "alice@example.test", "--allow", "bob@example.test", "--limit-rate", "1M",
                                                      "--json", "--home", path("home-seed")],
                                       log: directory.appendingPathComponent("seed.log"))
            let shared = try #require(await seeder.nextLine(timeout: .seconds(60)))
            let link = try #require((try JSONSerialization.jsonObject(with: Data(shared.utf8)) as? [String: Any])?["link"] as? String)
            var getters: [ChildProcess] = []
            for (user, node) in sites.dropFirst() {
                try FileManager.default.createDirectory(atPath: path("in-\(user)"), withIntermediateDirectories: true)
                getters.append(try lab.start(on: node, [CLITests.vertex.path, "sigma", "get", link, "--as", "\(user)@example.test",
                                                        "--to", path("in-\(user)"), "--seed", "--json", "--home", path("home-\(user)")],
                                             log: directory.appendingPathComponent("\(user)-get.log")))
            }
            var fromPeers = 0
            for ((user, _), getter) in zip(sites.dropFirst(), getters) {
                let line = try #require(await getter.nextLine(timeout: .seconds(120)), "\(user) did not finish: \((try? String(contentsOfFile: path("\(user)-get.log"), encoding: .utf8)) ?? "")")
                let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(report["event"] as? String == "complete", "\(user): \(line)")
                #expect(FileManager.default.contentsEqual(atPath: path("in-\(user)/film.bin"), andPath: path("film.bin")), "\(user)")
                fromPeers += ((report["statistics"] as? [String: Any])?["bytesUploaded"] as? Int) ?? 0
            }
            #expect(fromPeers > 0, "the sites traded pieces with each other")
            for getter in getters { await getter.stop() }
            await seeder.stop()
            await server.stop()
        }
    }
}

import Foundation
import Testing
import VertexTestSupport

/// `vertex sigma` as real processes against a real `vertex server` on loopback.
/// One test at a time: each runs several debug-built processes doing TLS, and the
/// machine is shared with every other suite.
@Suite("vertex sigma processes", .serialized)
struct SigmaCLITests {
    /// `vertex sigma share` as `user`; returns the process and the link it printed.
    static func share(_ path: (String) -> String, _ file: String, as user: String, _ extra: [String]) async throws -> (ChildProcess, String) {
        let process = try ChildProcess(CLITests.vertex, ["sigma", "share", file, "--as", "\(user)@example.test", "--json",
                                                         "--home", path("home-\(user)")] + extra,
                                       stderrFile: URL(fileURLWithPath: path("\(user)-share.log")))
        let line = try #require(await process.nextLine(timeout: .seconds(60)), "no link from vertex sigma share")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        return (process, try #require(object["link"] as? String))
    }

    /// `vertex sigma get` as `user` into `path(user)`.
    static func get(_ path: (String) -> String, _ link: String, as user: String, _ extra: [String] = []) throws -> ChildProcess {
        try FileManager.default.createDirectory(atPath: path("in-\(user)"), withIntermediateDirectories: true)
        return try ChildProcess(CLITests.vertex, ["sigma", "get", link, "--as", "\(user)@example.test", "--to", path("in-\(user)"),
                                                  "--json", "--home", path("home-\(user)")] + extra,
                                stderrFile: URL(fileURLWithPath: path("\(user)-get-\(UUID().uuidString.prefix(8)).log")))
    }

    /// The JSON object on a process's next line of output.
    static func report(_ process: ChildProcess, timeout: Duration = .seconds(120)) async throws -> [String: Any] {
        let line = try #require(await process.nextLine(timeout: timeout), "no report")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
    }

    static func statistics(_ report: [String: Any]) -> [String: Int] {
        (report["statistics"] as? [String: Any])?.compactMapValues { $0 as? Int } ?? [:]
    }

    @Test("one seeder and four downloaders, every upload capped alike: all finish byte-exact, and the seeder uploads less than 1.5× the file")
    func fourDownloaders() async throws {
        let peers = ["p1", "p2", "p3", "p4"]
        try await CLITests.withUsers(["seed"] + peers) { path in
            let size = 5 << 20
            try Data(pseudoRandomBytes(size, seed: 11)).write(to: URL(fileURLWithPath: path("film.bin")))
            let rate = ["--limit-rate", "2M"]
            let (seeder, link) = try await Self.share(path, path("film.bin"), as: "seed",
                                                      peers.flatMap { ["--allow", "\($0)@example.test"] } + rate)
            let getters = try peers.map { try Self.get(path, link, as: $0, ["--seed"] + rate) }
            for (peer, getter) in zip(peers, getters) {
                let report = try await Self.report(getter)
                #expect(report["event"] as? String == "complete", "\(peer): \(report)")
                #expect(FileManager.default.contentsEqual(atPath: path("in-\(peer)/film.bin"), andPath: path("film.bin")), "\(peer)")
                #expect(Self.statistics(report)["piecesRejected"] == 0)
            }
            seeder.signal(SIGTERM)
            let stopped = try await Self.report(seeder)
            let uploaded = try #require(Self.statistics(stopped)["bytesUploaded"])
            print("sigma processes: the seeder uploaded \(uploaded) bytes for a \(size)-byte file (\(String(format: "%.2f", Double(uploaded) / Double(size)))×)")
            #expect(uploaded < size * 3 / 2)
            for getter in getters { getter.signal(SIGTERM) }
            for getter in getters { #expect(await getter.exited.value == 0) }
            #expect(await seeder.exited.value == 0)
            // Nothing but the finished files in the targets: no partial directory left.
            for peer in peers { #expect(try FileManager.default.contentsOfDirectory(atPath: path("in-\(peer)")) == ["film.bin"]) }
        }
    }

    @Test("the seeder leaves once every piece is somewhere in the swarm (--until-distributed); the others still finish")
    func seederLeaves() async throws {
        let peers = ["p1", "p2", "p3"]
        try await CLITests.withUsers(["seed"] + peers) { path in
            try Data(pseudoRandomBytes(3 << 20, seed: 12)).write(to: URL(fileURLWithPath: path("film.bin")))
            let (seeder, link) = try await Self.share(path, path("film.bin"), as: "seed",
                                                      ["--public", "--until-distributed", "--limit-rate", "4M"])
            // The downloaders upload slower than the seeder: it has handed out every piece
            // long before they have traded them all.
            let getters = try peers.map { try Self.get(path, link, as: $0, ["--seed", "--limit-rate", "500k"]) }
            let left = try await Self.report(seeder, timeout: .seconds(60))
            #expect(left["event"] as? String == "stopped")
            #expect(await seeder.exited.value == 0)
            // It left before every downloader had the whole share.
            #expect(try #require(Self.statistics(left)["peersComplete"]) < peers.count, "\(left)")
            for (peer, getter) in zip(peers, getters) {
                let report = try await Self.report(getter)
                #expect(report["event"] as? String == "complete", "\(peer): \(report)")
                #expect(FileManager.default.contentsEqual(atPath: path("in-\(peer)/film.bin"), andPath: path("film.bin")), "\(peer)")
            }
            for getter in getters { getter.signal(SIGTERM) }
        }
    }

    @Test("a downloader killed at a random point and started again finishes without fetching its verified pieces again")
    func resume() async throws {
        try await CLITests.withUsers(["seed", "p1"]) { path in
            let size = 4 << 20
            try Data(pseudoRandomBytes(size, seed: 13)).write(to: URL(fileURLWithPath: path("film.bin")))
            let (seeder, link) = try await Self.share(path, path("film.bin"), as: "seed", ["--allow", "p1@example.test", "--limit-rate", "1M"])
            let first = try Self.get(path, link, as: "p1")
            // Somewhere in the middle (the transfer takes about 4 s at 1 MB/s): once the
            // saved have-map shows progress, after a random moment more.
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                let partial = (try? FileManager.default.contentsOfDirectory(atPath: path("in-p1")))?.first { $0.hasSuffix(".sigma-partial") }
                if let partial, let have = FileManager.default.contents(atPath: path("in-p1/\(partial)/have")), have.contains(where: { $0 != 0 }) { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...1_000)))
            first.signal(SIGKILL)
            _ = await first.exited.value
            let partial = try FileManager.default.contentsOfDirectory(atPath: path("in-p1"))
            #expect(partial.count == 1 && partial[0].hasPrefix(".film.bin.") && partial[0].hasSuffix(".sigma-partial"), "\(partial)")

            let second = try Self.get(path, link, as: "p1")
            let report = try await Self.report(second)
            let statistics = Self.statistics(report)
            let pieceLength = 32 * 1024
            let resumed = try #require(statistics["piecesResumed"])
            let downloaded = try #require(statistics["bytesDownloaded"])
            print("sigma resume: \(resumed) pieces resumed; \(downloaded) bytes fetched after the restart")
            #expect(resumed > 0)
            // Only what was missing came again (a few pieces in flight at the kill at most).
            #expect(downloaded <= size - resumed * pieceLength + 16 * pieceLength)
            #expect(FileManager.default.contentsEqual(atPath: path("in-p1/film.bin"), andPath: path("film.bin")))
            #expect(try FileManager.default.contentsOfDirectory(atPath: path("in-p1")) == ["film.bin"])
            #expect(await second.exited.value == 0)
            seeder.signal(SIGTERM)
        }
    }

    @Test("push: receivers that authorized the pusher fetch from it and from each other; one that did not refuses")
    func push() async throws {
        try await CLITests.withUsers(["alice", "bob", "carol", "dave"]) { path in
            let tree = path("album")
            try FileManager.default.createDirectory(atPath: tree + "/disc 1", withIntermediateDirectories: true)
            try Data(pseudoRandomBytes(3 << 20, seed: 14)).write(to: URL(fileURLWithPath: tree + "/disc 1/a.flac"))
            try Data(pseudoRandomBytes(100_000, seed: 15)).write(to: URL(fileURLWithPath: tree + "/cover.jpg"))
            try Data().write(to: URL(fileURLWithPath: tree + "/empty"))
            var receivers: [ChildProcess] = []
            for user in ["bob", "carol", "dave"] {
                if user != "dave" {
                    #expect(try await CLITests.vertex(["authorize", "\(user)@example.test", "alice@example.test", "--home", path("home-\(user)")]).status == 0)
                }
                try FileManager.default.createDirectory(atPath: path("in-\(user)"), withIntermediateDirectories: true)
                let receiver = try ChildProcess(CLITests.vertex, ["sigma", "receive", "--as", "\(user)@example.test", "--to", path("in-\(user)"),
                                                                  "--home", path("home-\(user)")],
                                                stderrFile: URL(fileURLWithPath: path("\(user)-receive.log")))
                #expect(await receiver.nextLine()?.hasPrefix("receiving pushed shares") == true)
                receivers.append(receiver)
            }
            let pushed = try await ChildProcess.run(CLITests.vertex, ["sigma", "push", tree, "--from", "alice@example.test",
                                                                      "--to", "bob@example.test", "--to", "carol@example.test",
                                                                      "--to", "dave@example.test", "--home", path("home-alice")],
                                                    timeout: .seconds(120))
            #expect(pushed.status == 0, "\(pushed.stderr) \(pushed.stdout)")
            #expect(pushed.stderr.contains("dave@example.test refused") && pushed.stderr.contains("vertex authorize"), "\(pushed.stderr)")
            #expect(pushed.stdout.contains("every receiver holds album"), "\(pushed.stdout)")
            for user in ["bob", "carol"] {
                for file in ["disc 1/a.flac", "cover.jpg", "empty"] {
                    #expect(FileManager.default.contentsEqual(atPath: path("in-\(user)/album/\(file)"), andPath: tree + "/" + file), "\(user): \(file)")
                }
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: path("in-dave")).isEmpty)
            for receiver in receivers { receiver.signal(SIGTERM) }
            for receiver in receivers { #expect(await receiver.exited.value == 0) }
        }
    }

    @Test("a link whose holder is not there: get ends with a one-line error naming the holder, nothing left behind")
    func holderAbsent() async throws {
        try await CLITests.withUsers(["seed", "p1"]) { path in
            let link = "sigma:\(String(repeating: "5a", count: 32))?kind=file&name=gone.bin&size=1000&from=seed%40example.test"
            try FileManager.default.createDirectory(atPath: path("in-p1"), withIntermediateDirectories: true)
            let run = try await ChildProcess.run(CLITests.vertex, ["sigma", "get", link, "--as", "p1@example.test", "--to", path("in-p1"),
                                                                   "--home", path("home-p1")], timeout: .seconds(60))
            #expect(run.status != 0)
            #expect(run.stderr.contains("no holder of gone.bin can be reached") && run.stderr.contains("seed@example.test"), "\(run.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: path("in-p1")).isEmpty)
        }
    }

    @Test("bad command lines get one-line errors: a share without --allow or --public, a malformed link")
    func badCommandLines() async throws {
        let noAudience = try await CLITests.vertex(["sigma", "share", "/etc/hostname", "--as", "a@example.test"])
        #expect(noAudience.status != 0 && noAudience.stderr.contains("--allow ADDRESS"))
        let badLink = try await CLITests.vertex(["sigma", "get", "sigma:xyz?kind=file", "--as", "a@example.test", "--to", "/tmp"])
        #expect(badLink.status != 0 && badLink.stderr.contains("bad share link"), "\(badLink.stderr)")
    }
}

import Foundation
import Testing
import VertexTestSupport

/// `vertex send`, `vertex receive` and `vertex authorize` as real processes against a
/// real `vertex server`.
@Suite("vertex send / receive / authorize processes")
struct FileCLITests {
    /// A server with alice and bob registered, each with a home; `body` gets a path helper.
    static func withUsers(_ body: (_ path: (String) -> String) async throws -> Void) async throws {
        try await CLITests.withUsers(["alice", "bob"], body)
    }

    static func receive(_ path: (String) -> String, into inbox: String, _ extra: [String] = []) async throws -> ChildProcess {
        try FileManager.default.createDirectory(atPath: inbox, withIntermediateDirectories: true)
        let receiver = try ChildProcess(CLITests.vertex, ["receive", "--as", "bob@example.test", "--to", inbox,
                                                          "--home", path("home-bob")] + extra,
                                        stderrFile: URL(fileURLWithPath: path("receive-\(UUID().uuidString).log")))
        #expect(await receiver.nextLine()?.hasPrefix("receiving files for bob@example.test") == true)
        return receiver
    }

    static func send(_ path: (String) -> String, _ arguments: [String]) async throws -> ChildProcess.Run {
        try await CLITests.vertex(["send"] + arguments + ["--from", "alice@example.test", "--to", "bob@example.test", "--home", path("home-alice")])
    }

    @Test("authorize, then send a directory and a file: the tree arrives verified, with a JSON summary")
    func authorizedSend() async throws {
        try await Self.withUsers { path in
            #expect(try await CLITests.vertex(["authorize", "bob@example.test", "--home", path("home-bob")]).stdout == "bob@example.test trusts no senders\n")
            let added = try await CLITests.vertex(["authorize", "bob@example.test", "alice@example.test", "--home", path("home-bob")])
            #expect(added.status == 0 && added.stdout.contains("trusts alice@example.test"))
            #expect(try await CLITests.vertex(["authorize", "bob@example.test", "--home", path("home-bob")]).stdout == "alice@example.test\n")

            let tree = path("project")
            try FileManager.default.createDirectory(atPath: tree + "/src/deep", withIntermediateDirectories: true)
            try Data(pseudoRandomBytes(900_000)).write(to: URL(fileURLWithPath: tree + "/src/deep/data.bin"))
            try "hello\n".write(toFile: tree + "/README", atomically: true, encoding: .utf8)
            try Data(pseudoRandomBytes(12_345, seed: 7)).write(to: URL(fileURLWithPath: path("single.bin")))

            let receiver = try await Self.receive(path, into: path("inbox"))
            let sent = try await Self.send(path, [tree, path("single.bin"), "--json"])
            #expect(sent.status == 0, "\(sent.stderr)")
            let summary = try JSONSerialization.jsonObject(with: Data(sent.stdout.utf8)) as? [String: Any]
            #expect(summary?["verified"] as? Bool == true)
            #expect(summary?["totalBytes"] as? Int == 900_000 + 6 + 12_345)
            #expect((summary?["files"] as? [String])?.sorted() == ["project/README", "project/src/deep/data.bin", "single.bin"])
            let line = await receiver.nextLine()
            #expect(line?.hasPrefix("received 3 files") == true && line?.contains("from alice@example.test") == true, "\(line ?? "")")
            #expect(await receiver.exited.value == 0)   // done after one complete transfer
            for name in ["project/src/deep/data.bin", "project/README", "single.bin"] {
                let original = name == "single.bin" ? path("single.bin") : path(name)
                #expect(FileManager.default.contentsEqual(atPath: path("inbox/\(name)"), andPath: original), "\(name)")
            }

            let removed = try await CLITests.vertex(["authorize", "bob@example.test", "alice@example.test", "--remove", "--home", path("home-bob")])
            #expect(removed.status == 0)
        }
    }

    @Test("without a terminal, --yes or trust, the sender is refused and told how to be trusted; nothing is written")
    func unauthorizedRefused() async throws {
        try await Self.withUsers { path in
            try "secret plans\n".write(toFile: path("plans.txt"), atomically: true, encoding: .utf8)
            let receiver = try await Self.receive(path, into: path("inbox"))
            let sent = try await Self.send(path, [path("plans.txt")])
            #expect(sent.status == 1)
            #expect(sent.stderr.contains("does not take files from alice@example.test") && sent.stderr.contains("vertex authorize"), "\(sent.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: path("inbox")).isEmpty)
            await receiver.stop()
        }
    }

    @Test("bad command lines get a one-line error: missing file, symlink in a directory, receiving into a file")
    func badInput() async throws {
        try await Self.withUsers { path in
            let missing = try await Self.send(path, [path("nope.bin")])
            #expect(missing.status != 0 && missing.stderr.contains("no such file or directory"), "\(missing.stderr)")

            try FileManager.default.createDirectory(atPath: path("dir"), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: path("dir/link"), withDestinationPath: "/etc")
            let linked = try await Self.send(path, [path("dir")])
            #expect(linked.status != 0 && linked.stderr.contains("is a symbolic link"), "\(linked.stderr)")

            try "x".write(toFile: path("a-file"), atomically: true, encoding: .utf8)
            let intoFile = try await CLITests.vertex(["receive", "--as", "bob@example.test", "--to", path("a-file"), "--home", path("home-bob")])
            #expect(intoFile.status != 0 && intoFile.stderr.contains("is not a directory"), "\(intoFile.stderr)")
            #expect(intoFile.stderr.split(separator: "\n").count == 1)
        }
    }

    @Test("a sender killed at a random point: sending again resumes, and the file is byte-exact")
    func resumeAfterKill() async throws {
        try await Self.withUsers { path in
            let size = 48 * 1024 * 1024
            try Data(pseudoRandomBytes(size, seed: 42)).write(to: URL(fileURLWithPath: path("big.bin")))
            let receiver = try await Self.receive(path, into: path("inbox"), ["--yes", "--keep-listening"])
            // The partial file's name carries a tag of the sender and the file's hash.
            let inbox = path("inbox")
            let partials = { @Sendable () -> [String] in
                ((try? FileManager.default.contentsOfDirectory(atPath: inbox)) ?? [])
                    .filter { $0.hasPrefix(".big.bin.") && $0.hasSuffix(".vertex-partial") }.map { inbox + "/" + $0 }
            }
            let killAt = Int.random(in: 1_000_000...(size / 2))
            // Paced so that the kill lands mid-file even when the machine is busy.
            let sender = try ChildProcess(CLITests.vertex, ["send", path("big.bin"), "--from", "alice@example.test", "--to", "bob@example.test",
                                                            "--home", path("home-alice"), "--limit-rate", "12M"])
            // Watched from a thread of its own, so that a busy cooperative pool cannot make
            // the kill late.
            let finalPath = path("inbox/big.bin")
            let endedEarly = await onOwnThread { () -> Bool in
                let deadline = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < deadline {
                    let held = partials().first.flatMap { try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int } ?? 0
                    if held >= killAt {
                        sender.signal(SIGKILL)
                        return false
                    }
                    if FileManager.default.fileExists(atPath: finalPath) { return true }
                    Thread.sleep(forTimeInterval: 0.002)
                }
                return false
            }
            try #require(!endedEarly, "the send ended before the kill")
            await sender.stop()
            // Interrupted: nothing under the final name.
            #expect(!FileManager.default.fileExists(atPath: path("inbox/big.bin")))
            try await Task.sleep(for: .milliseconds(300))   // the receiver notices the lost stream

            let again = try await Self.send(path, [path("big.bin")])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stdout.contains("resumed"), "killed at \(killAt): \(again.stdout)")
            #expect(FileManager.default.contentsEqual(atPath: path("inbox/big.bin"), andPath: path("big.bin")))
            #expect(partials().isEmpty)
            await receiver.stop()
        }
    }
}

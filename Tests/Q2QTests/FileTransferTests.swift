import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Q2Q
@testable import VertexApps
import Testing
import VertexTestSupport

@Suite("File transfer")
struct FileTransferTests {
    static let alice = try! Q2QAddress("alice@example.test")
    static let bob = try! Q2QAddress("bob@example.test")

    /// alice sends `file` to bob's `inbox` over `methods`; bob accepts unless `refuse`.
    static func transfer(_ file: URL, into inbox: URL, in domain: TestDomain, methods: Q2QMethodPolicy = .tcp,
                         refuse: String? = nil, options: FileReceiver.Options = .init(),
                         progress: @escaping @Sendable (Int64, Int64) -> Void = { _, _ in }) async throws -> (FileSendSummary, FileReceiveSummary?) {
        let aliceNode = try await makeNode("alice@example.test", in: domain)
        let bobNode = try await makeNode("bob@example.test", in: domain)
        let listener = try await bobNode.listen(as: Self.bob, service: FileTransferMessage.service)
        let receiving = Task { () -> FileReceiveSummary? in
            var iterator = listener.connections.makeAsyncIterator()
            guard let stream = await iterator.next() else { return nil }
            return try? await FileReceiver.receive(stream, into: inbox, options: options) { _, _ in refuse }
        }
        func shutdown() async {
            await listener.close()
            await aliceNode.shutdown()
            await bobNode.shutdown()
        }
        do {
            let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: FileTransferMessage.service, methods: methods)
            let sent = try await FileSender.send([file], over: stream, progress: progress)
            let received = await receiving.value
            await shutdown()
            return (sent, received)
        } catch {
            await shutdown()
            throw error
        }
    }

    static func makeFile(_ directory: URL, _ name: String, bytes: Int) throws -> URL {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent(name)
        try Data(pseudoRandomBytes(bytes)).write(to: url)
        return url
    }

    @Test("a file arrives byte-exact under its name, over tcp and over the relay", arguments: ["tcp", "relay"])
    func sendFile(method: String) async throws {
        try await withDomain { domain in
            let file = try Self.makeFile(domain.directory.appendingPathComponent("out"), "report.bin", bytes: 3_000_000)
            let inbox = domain.directory.appendingPathComponent("inbox")
            try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
            let (sent, received) = try await Self.transfer(file, into: inbox, in: domain, methods: Q2QMethodPolicy(method)!)
            #expect(sent.verified && sent.bytesSent == 3_000_000)
            #expect(received?.verified == true && received?.peer == Self.alice)
            #expect(try Data(contentsOf: inbox.appendingPathComponent("report.bin")) == Data(contentsOf: file))
            #expect(try FileManager.default.contentsOfDirectory(atPath: inbox.path) == ["report.bin"])
        }
    }

    @Test("an interrupted transfer resumes after the held part is checked; a held part that differs starts over; another sender's never resumes (review L5)")
    func resume() async throws {
        try await withDomain { domain in
            let file = try Self.makeFile(domain.directory.appendingPathComponent("out"), "big.bin", bytes: 2_000_000)
            let inbox = domain.directory.appendingPathComponent("inbox")
            try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
            let original = try Data(contentsOf: file)
            let sha256 = SHA256.hash(data: original).map { String(format: "%02x", $0) }.joined()
            // What carol's interrupted transfer of the same file left is not alice's to
            // resume (nor to learn the size and hash of): she sends it all.
            let inbox0 = domain.directory.appendingPathComponent("inbox0")
            try FileManager.default.createDirectory(at: inbox0, withIntermediateDirectories: true)
            try original.prefix(1_500_000).write(to: FileReceiver.partialURL(for: "big.bin", in: inbox0, from: try Q2QAddress("carol@example.test"), sha256: sha256))
            let (fromScratch, _) = try await Self.transfer(file, into: inbox0, in: domain)
            #expect(fromScratch.bytesSent == 2_000_000)
            // What alice's interrupted transfer left: the first 1.5 MB.
            try original.prefix(1_500_000).write(to: FileReceiver.partialURL(for: "big.bin", in: inbox, from: Self.alice, sha256: sha256))
            let (resumed, _) = try await Self.transfer(file, into: inbox, in: domain)
            #expect(resumed.bytesSent == 500_000)
            #expect(try Data(contentsOf: inbox.appendingPathComponent("big.bin")) == original)

            // A held part that is not a prefix of the file: everything is sent again.
            let inbox2 = domain.directory.appendingPathComponent("inbox2")
            try FileManager.default.createDirectory(at: inbox2, withIntermediateDirectories: true)
            var wrong = original.prefix(1_000_000)
            wrong[wrong.startIndex + 10] ^= 0xFF
            try wrong.write(to: FileReceiver.partialURL(for: "big.bin", in: inbox2, from: Self.alice, sha256: sha256))
            let (restarted, _) = try await Self.transfer(file, into: inbox2, in: domain)
            #expect(restarted.bytesSent == 2_000_000)
            #expect(try Data(contentsOf: inbox2.appendingPathComponent("big.bin")) == original)
        }
    }

    @Test("the stream reader holds what is unread, not what was read: its memory does not grow with the stream")
    func readerMemoryIsBounded() async throws {
        let (inbound, source) = NIOAsyncChannelInboundStream<ByteBuffer>.makeTestingStream()
        var rng = SplitMix64(seed: 5)
        // A control message split over two chunks, then 16 MiB of data in chunks of
        // random sizes (as TLS records and socket reads cut a stream), then the end.
        let json = try JSONEncoder().encode(FileTransferMessage.Start(offsets: [0, 7]))
        var message = ByteBuffer()
        message.writeInteger(UInt32(json.count))
        message.writeBytes(json)
        source.yield(message.getSlice(at: 0, length: 3)!)
        source.yield(message.getSlice(at: 3, length: message.readableBytes - 3)!)
        let total = 16 << 20
        var sent = 0
        var fed: [ByteBuffer] = []
        while sent < total {
            let count = min(total - sent, Int.random(in: 1...(96 << 10), using: &rng))
            fed.append(ByteBuffer(bytes: (0..<count).map { UInt8(truncatingIfNeeded: sent + $0) }))
            sent += count
        }
        let feeding = Task {
            for chunk in fed { source.yield(chunk) }
            source.finish()
        }

        var reader = StreamReader(inbound)
        #expect(try await reader.message(FileTransferMessage.Start.self) == .init(offsets: [0, 7]))
        var received = 0
        var mostHeld = 0
        while received < total {
            let chunk = try await reader.data(upTo: 1 << 20)
            let expected = (0..<chunk.readableBytes).map { UInt8(truncatingIfNeeded: received + $0) }
            #expect(Array(chunk.readableBytesView) == expected)
            received += chunk.readableBytes
            mostHeld = max(mostHeld, reader.heldCapacity)
        }
        await feeding.value
        #expect(received == total)
        // One incoming chunk at a time (under 128 KiB); appending every chunk to one
        // buffer had held all 16 MiB.
        #expect(mostHeld <= 256 << 10, "the reader held \(mostHeld) bytes")
        await #expect(throws: FileTransferError.self) { try await reader.data(upTo: 1) }
    }

    @Test("a receiver that refuses: the sender gets the reason, nothing is written")
    func refused() async throws {
        try await withDomain { domain in
            let file = try Self.makeFile(domain.directory.appendingPathComponent("out"), "x.bin", bytes: 1000)
            let inbox = domain.directory.appendingPathComponent("inbox")
            try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
            let error = await #expect(throws: FileTransferError.self) {
                _ = try await Self.transfer(file, into: inbox, in: domain, refuse: "not from you")
            }
            #expect(error?.description.contains("not from you") == true)
            #expect(try FileManager.default.contentsOfDirectory(atPath: inbox.path).isEmpty)
        }
    }

    @Test("offers that would escape the directory or overwrite are refused", arguments: [
        "../escape", "/etc/passwd", "a/../../b", "a//b", "a/", ".", "", "back\\slash", "x.vertex-partial",
        "dir/.x.vertex-partial", "bell\u{7}", String(repeating: "n", count: 256),
        // Hidden components (planted dot-files), and a right-to-left override that makes
        // "\u{202E}gpj.sh" read as "hs.jpg" in a prompt.
        ".ssh/authorized_keys", ".bashrc", "photos/.config/autostart/x.desktop", "\u{202E}gpj.sh", "a\u{200B}b",
    ])
    func unsafeNames(name: String) {
        let offer = FileTransferMessage.Offer(version: 1, files: [.init(name: name, size: 1, sha256: String(repeating: "a", count: 64))])
        #expect(FileReceiver.check(offer, from: Self.alice, directory: FileManager.default.temporaryDirectory) != nil)
    }

    @Test("sizes that would overflow when added up are refused, and the offer's total never traps")
    func overflowingSizes() {
        let sha = String(repeating: "a", count: 64)
        let huge = FileTransferMessage.Offer(version: 1, files: [.init(name: "a", size: .max, sha256: sha), .init(name: "b", size: .max, sha256: sha)])
        #expect(huge.totalBytes == .max)
        #expect(FileReceiver.check(huge, from: Self.alice, directory: FileManager.default.temporaryDirectory)?.contains("bad size") == true)
        let largest = FileTransferMessage.Offer(version: 1, files: [.init(name: "a", size: FileTransferMessage.maximumFileSize, sha256: sha)])
        #expect(FileReceiver.check(largest, from: Self.alice, directory: FileManager.default.temporaryDirectory) == nil)
    }

    /// alice connected by tcp to bob's file-transfer listener, whose first stream bob
    /// receives into an inbox with `options`, accepting anything; `body` gets alice's
    /// stream, the inbox, and bob's receive (its error, nil when it succeeded).
    static func withRawSender<T: Sendable>(in domain: TestDomain, options: FileReceiver.Options = .init(),
                                           _ body: (Q2QStream, URL, Task<(any Error)?, Never>) async throws -> T) async throws -> T {
        let aliceNode = try await makeNode("alice@example.test", in: domain)
        let bobNode = try await makeNode("bob@example.test", in: domain)
        let listener = try await bobNode.listen(as: Self.bob, service: FileTransferMessage.service)
        let inbox = domain.directory.appendingPathComponent("inbox-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
        let receiving = Task { () -> (any Error)? in
            var iterator = listener.connections.makeAsyncIterator()
            guard let stream = await iterator.next() else { return nil }
            do {
                _ = try await FileReceiver.receive(stream, into: inbox, options: options) { _, _ in nil }
                return nil
            } catch {
                return error
            }
        }
        defer { receiving.cancel() }
        let stream = try await aliceNode.connect(from: Self.alice, to: Self.bob, service: FileTransferMessage.service, methods: .tcp)
        let result = try await body(stream, inbox, receiving)
        try? await stream.channel.channel.close()
        await listener.close()
        await aliceNode.shutdown()
        await bobNode.shutdown()
        return result
    }

    @Test("a sender that connects and sends nothing is dropped after the idle timeout (review M9)")
    func silentSender() async throws {
        try await withDomain { domain in
            try await Self.withRawSender(in: domain, options: .init(idleTimeout: .seconds(1))) { _, _, receiving in
                let started = ContinuousClock.now
                #expect(await receiving.value != nil)
                // Well under the default 60 s: the 1 s timeout ended it (a loaded machine
                // has taken more than 10 s to get there).
                #expect(ContinuousClock.now - started < .seconds(30))
            }
        }
    }

    @Test("an offer larger than the free space is refused before any data comes (review L6: accepted senders filling the disk)")
    func notEnoughSpace() async throws {
        try await withDomain { domain in
            try await Self.withRawSender(in: domain) { stream, inbox, receiving in
                let answer = try await stream.channel.executeThenClose { inbound, outbound in
                    let offer = FileTransferMessage.Offer(version: 1, files: [.init(name: "huge.bin", size: FileTransferMessage.maximumFileSize,
                                                                                    sha256: String(repeating: "a", count: 64))])
                    try await outbound.send(offer)
                    var reader = StreamReader(inbound)
                    return try await reader.message(FileTransferMessage.Answer.self)
                }
                #expect(!answer.accept)
                #expect(answer.reason?.contains("not enough space") == true, "\(answer)")
                #expect(await receiving.value != nil)
                #expect(try FileManager.default.contentsOfDirectory(atPath: inbox.path).isEmpty)
            }
        }
    }

    @Test("vertex demo prints a verified row for each method")
    func demo() async throws {
        let run = try await ChildProcess.run(ChildProcess.built("vertex"), ["demo", "--size", "2"])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        let rows = run.stdout.split(separator: "\n").filter { $0.hasSuffix("yes (SHA-256)") }
        #expect(rows.count == 4, "\(run.stdout)")
        for prefix in ["tcp@127.0.0.1:", "ptcp@127.0.0.1:", "rptcp@127.0.0.1:", "relay (virtual)"] {
            #expect(rows.contains { $0.hasPrefix(prefix) }, "no verified \(prefix) row in \(run.stdout)")
        }
    }

    @Test("a directory arrives with its tree, each file verified; hidden files only when the receiver allows them")
    func directory() async throws {
        try await withDomain { domain in
            let root = domain.directory.appendingPathComponent("out/photos")
            let files = [("a.jpg", 70_000), ("2024/b.jpg", 1_200_000), ("2024/deep/c.txt", 10), (".meta", 5)]
            for (path, size) in files {
                let url = root.appendingPathComponent(path)
                _ = try Self.makeFile(url.deletingLastPathComponent(), url.lastPathComponent, bytes: size)
            }
            try FileManager.default.createDirectory(at: root.appendingPathComponent("empty"), withIntermediateDirectories: true)
            let inbox = domain.directory.appendingPathComponent("inbox")
            try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
            // By default a hidden path is refused, and nothing at all is written.
            let refusal = await #expect(throws: FileTransferError.self) {
                _ = try await Self.transfer(root, into: inbox, in: domain)
            }
            #expect(refusal?.description.contains("'photos/.meta' is a hidden path") == true)
            #expect(try FileManager.default.contentsOfDirectory(atPath: inbox.path).isEmpty)
            let (sent, received) = try await Self.transfer(root, into: inbox, in: domain, options: .init(allowHidden: true))
            #expect(sent.files.sorted() == ["photos/.meta", "photos/2024/b.jpg", "photos/2024/deep/c.txt", "photos/a.jpg"])
            #expect(received?.verified == true)
            for (path, _) in files {
                #expect(try Data(contentsOf: inbox.appendingPathComponent("photos/\(path)")) == Data(contentsOf: root.appendingPathComponent(path)))
            }
        }
    }

    @Test("a symbolic link inside a sent directory is refused before anything is sent")
    func symlinkInSource() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-links-\(UUID().uuidString)/dir")
        defer { try? FileManager.default.removeItem(at: root.deletingLastPathComponent()) }
        _ = try Self.makeFile(root, "ok.txt", bytes: 10)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("out").path, withDestinationPath: "/etc")
        let error = #expect(throws: FileTransferError.self) { try FileSelection([root]) }
        #expect(error?.description.contains("is a symbolic link") == true)
    }

    @Test("a symbolic link in the receiver's directory cannot lead a file out of it")
    func symlinkInTarget() throws {
        let inbox = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-inbox-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: inbox) }
        try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: inbox.appendingPathComponent("photos").path, withDestinationPath: "/tmp")
        let offer = FileTransferMessage.Offer(version: 1, files: [.init(name: "photos/x.jpg", size: 1, sha256: String(repeating: "a", count: 64))])
        #expect(FileReceiver.check(offer, from: Self.alice, directory: inbox)?.contains("symbolic link") == true)
        let clash = FileTransferMessage.Offer(version: 1, files: [
            .init(name: "a", size: 1, sha256: String(repeating: "a", count: 64)),
            .init(name: "a/b", size: 1, sha256: String(repeating: "a", count: 64)),
        ])
        #expect(FileReceiver.check(clash, from: Self.alice, directory: inbox)?.contains("as a file and as a directory") == true)
    }

    @Test("a file that changes while it is sent is not accepted under its name; one that shrinks stops the send",
          arguments: ["changes", "shrinks"])
    func sourceChanges(how: String) async throws {
        try await withDomain { domain in
            let file = try Self.makeFile(domain.directory.appendingPathComponent("out"), "moving.bin", bytes: 4_000_000)
            let inbox = domain.directory.appendingPathComponent("inbox")
            try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
            let meddled = NIOLockedValueBox(false)
            let error = await #expect(throws: FileTransferError.self) {
                _ = try await Self.transfer(file, into: inbox, in: domain) { _, _ in
                    let first = meddled.withLockedValue { done in
                        defer { done = true }
                        return !done
                    }
                    guard first else { return }
                    // After the first chunk went out: rewrite the rest, or cut the file short.
                    let handle = try! FileHandle(forWritingTo: file)
                    if how == "changes" {
                        try! handle.seek(toOffset: 3_000_000)
                        try! handle.write(contentsOf: Data(repeating: 0xAB, count: 1_000_000))
                    } else {
                        try! handle.truncate(atOffset: 1_000_000)
                    }
                    try! handle.close()
                }
            }
            #expect(error?.description.contains(how == "changes" ? "could not verify" : "became shorter") == true, "\(String(describing: error))")
            #expect(!FileManager.default.fileExists(atPath: inbox.appendingPathComponent("moving.bin").path))
        }
    }

    @Test("a receiver whose disk fills up tells the sender why (up front by default, else when a write fails); nothing appears under the final name")
    func diskFull() async throws {
        try await withDomain { domain in
            let file = try Self.makeFile(domain.directory.appendingPathComponent("out"), "large.bin", bytes: 3_000_000)
            let inbox = domain.directory.appendingPathComponent("small-disk")
            try FileManager.default.createDirectory(at: inbox, withIntermediateDirectories: true)
            // A 1 MiB filesystem (tmpfs; the suite runs as root, as .ci/run does).
            let mounted = try await ChildProcess.run(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=1m", "tmpfs", inbox.path])
            try #require(mounted.status == 0, "cannot mount a small tmpfs (needs root): \(mounted.stderr)")
            defer { _ = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: [inbox.path]).waitUntilExit() }
            let refused = await #expect(throws: FileTransferError.self) {
                _ = try await Self.transfer(file, into: inbox, in: domain)
            }
            #expect(refused?.description.contains("not enough space") == true, "\(String(describing: refused))")
            #expect(try FileManager.default.contentsOfDirectory(atPath: inbox.path).isEmpty)
            // Without the check up front (or when the disk fills while data comes).
            let error = await #expect(throws: FileTransferError.self) {
                _ = try await Self.transfer(file, into: inbox, in: domain, options: .init(minimumFreeSpace: nil))
            }
            #expect(error?.description.contains("stopped the transfer: the receiver could not write large.bin: No space left on device") == true,
                    "\(String(describing: error))")
            #expect(!FileManager.default.fileExists(atPath: inbox.appendingPathComponent("large.bin").path))
        }
    }
}

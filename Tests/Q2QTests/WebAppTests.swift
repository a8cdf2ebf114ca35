import Foundation
import NIOCore
import Q2Q
import Testing
import VertexTestSupport
@testable import VertexWebApp

/// `vertex app`: its access rules, its storage, and the whole app in a real browser.
@Suite("vertex app (the local web app)")
struct WebAppTests {
    static let policy = AccessPolicy(token: "secret-token", port: 8790)

    @Test("the access policy takes the token from the cookie, a bearer header or the URL, only for this app's Host and Origin",
          arguments: [
              (AccessPolicy.Request(method: "GET", authority: "127.0.0.1:8790", origin: nil, cookieToken: "secret-token"), AccessPolicy.Decision.allow),
              (.init(method: "GET", authority: "localhost:8790", origin: nil, bearerToken: "secret-token"), .allow),
              (.init(method: "GET", authority: "[::1]:8790", origin: nil, queryToken: "secret-token"), .grant),
              (.init(method: "POST", authority: "127.0.0.1:8790", origin: "http://127.0.0.1:8790", cookieToken: "secret-token"), .allow),
              (.init(method: "POST", authority: "LOCALHOST:8790", origin: "http://localhost:8790", cookieToken: "secret-token"), .allow),
          ])
    func allowed(request: AccessPolicy.Request, decision: AccessPolicy.Decision) {
        #expect(Self.policy.decide(request) == decision)
    }

    @Test("the access policy refuses a missing or wrong token, a foreign Host (DNS rebinding), a foreign or null Origin",
          arguments: [
              AccessPolicy.Request(method: "GET", authority: "127.0.0.1:8790", origin: nil),
              .init(method: "GET", authority: "127.0.0.1:8790", origin: nil, cookieToken: "secret-tokeN"),
              .init(method: "GET", authority: "127.0.0.1:8790", origin: nil, cookieToken: "secret-token-and-more"),
              .init(method: "GET", authority: "127.0.0.1:8790", origin: nil, bearerToken: ""),
              .init(method: "GET", authority: "evil.test:8790", origin: nil, cookieToken: "secret-token"),
              .init(method: "GET", authority: "evil.test:8790", origin: nil, queryToken: "secret-token"),
              .init(method: "GET", authority: "127.0.0.1:8791", origin: nil, cookieToken: "secret-token"),
              .init(method: "GET", authority: "127.0.0.1", origin: nil, cookieToken: "secret-token"),
              .init(method: "GET", authority: nil, origin: nil, cookieToken: "secret-token"),
              .init(method: "POST", authority: "127.0.0.1:8790", origin: "http://evil.test", cookieToken: "secret-token"),
              .init(method: "POST", authority: "127.0.0.1:8790", origin: "null", cookieToken: "secret-token"),
              .init(method: "POST", authority: "127.0.0.1:8790", origin: "https://127.0.0.1:8790", cookieToken: "secret-token"),
              .init(method: "GET", authority: "127.0.0.1:8790", origin: "http://localhost:8790", cookieToken: "secret-token"),
          ])
    func refused(request: AccessPolicy.Request) {
        guard case .refuse(let reason) = Self.policy.decide(request) else {
            Issue.record("allowed: \(request)")
            return
        }
        #expect(!reason.isEmpty && !reason.contains("\n"))
    }

    @Test("property: without the exact token, no request is let in, whatever its Host, Origin, method and credentials")
    func refusesWithoutToken() {
        var random = SplitMix64(seed: 2_101)
        let pieces = ["127.0.0.1:8790", "localhost:8790", "[::1]:8790", "evil.test:8790", "127.0.0.1", ":8790", "", "secret-token",
                      "secret-toke", "Secret-token", "secret-token ", "http://127.0.0.1:8790", "null", "\u{0}", "é", "[::1]"]
        func pick() -> String? {
            let choice = Int(random.next() % UInt64(pieces.count + 1))
            guard choice < pieces.count else { return nil }
            // Sometimes two pieces run together, or a piece with a byte more.
            switch random.next() % 4 {
            case 0: return pieces[choice] + pieces[Int(random.next() % UInt64(pieces.count))]
            case 1: return pieces[choice] + String(UnicodeScalar(UInt8(random.next() % 128)))
            default: return pieces[choice]
            }
        }
        for _ in 0..<20_000 {
            let request = AccessPolicy.Request(method: ["GET", "POST", "DELETE", "get"][Int(random.next() % 4)], authority: pick(),
                                               origin: pick(), queryToken: pick(), cookieToken: pick(), bearerToken: pick())
            let decision = Self.policy.decide(request)
            let hasToken = [request.queryToken, request.cookieToken, request.bearerToken].contains("secret-token")
            if case .refuse = decision { continue }
            #expect(hasToken, "let in without the token: \(request)")
            #expect(["127.0.0.1:8790", "localhost:8790", "[::1]:8790"].contains(request.authority?.lowercased()), "\(request)")
        }
    }

    @Test("tokens are 43 URL-safe characters and differ each time")
    func tokens() {
        let tokens = (0..<100).map { _ in AccessPolicy.newToken() }
        #expect(Set(tokens).count == 100)
        #expect(tokens.allSatisfy { $0.count == 43 && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" } })
    }

    @Test("the change signal wakes a waiter on a change, and after its patience without one")
    func changeSignal() async {
        let signal = ChangeSignal()
        let seen = await signal.wait(after: -1, patience: .seconds(30))
        #expect(seen == 0)
        async let woken = signal.wait(after: 0, patience: .seconds(30))
        try? await Task.sleep(for: .milliseconds(50))
        signal.changed()
        #expect(await woken == 1)
        #expect(await signal.wait(after: 1, patience: .milliseconds(20)) == 1)
    }

    @Test("contacts and the inbox are kept in the home database (added, renamed, removed; newest file first)")
    func storage() async throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-app-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let store = try SQLiteNodeStore(home: home)
        let bob = try Q2QAddress("bob@b.test")
        try await store.saveContact(Contact(address: bob, name: "Bob", added: Date(timeIntervalSince1970: 1_000)))
        try await store.saveContact(Contact(address: try Q2QAddress("carol@c.test"), name: "carol", added: Date()))
        try await store.saveContact(Contact(address: bob, name: "Robert", added: Date()))
        let contacts = try await SQLiteNodeStore(home: home).contacts()
        #expect(contacts.map(\.name) == ["carol", "Robert"])
        #expect(contacts.last?.added == Date(timeIntervalSince1970: 1_000))
        #expect(try await store.removeContact(bob))
        #expect(try await !store.removeContact(bob))
        for name in ["a", "b"] {
            _ = try await store.recordReceived(ReceivedFile(receiver: bob, sender: try Q2QAddress("alice@a.test"), path: "/x/\(name)",
                                                            size: 5, verified: true, received: Date()))
        }
        #expect(try await store.receivedFiles().map(\.path) == ["/x/b", "/x/a"])
        #expect(try store.appliedMigrations().contains("v3: contacts, received files"))
    }

    @Test("vertex app refuses bad command lines with one clear line", arguments: [
        (["--port", "70000"], "--port must be 0–65535"),
        (["--prompt-timeout", "0"], "--prompt-timeout must be 1–3600 seconds"),
        (["--listen", "example.com"], "--listen takes an IP address"),
        (["--listen", "0.0.0.0"], "--listen needs the address others will open"),
        (["--as", "nobody@nowhere.test"], "no identity nobody@nowhere.test"),
    ])
    func badCommandLines(arguments: [String], message: String) async throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-app-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let run = try await ChildProcess.run(CLITests.vertex, ["app", "--home", home.path, "--port", "0"] + arguments, timeout: .seconds(30))
        #expect(run.status != 0)
        // The error on the first line (argument parser adds its usage hint after it).
        #expect(run.stderr.split(separator: "\n").first?.contains(message) == true, "\(run.stderr)")
    }

    @Test("SIGINT ends vertex app at once and cleanly, with a page's event stream open", .timeLimit(.minutes(1)))
    func interrupted() async throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-app-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: home) }
        let log = home.appendingPathComponent("app.log")
        let app = try ChildProcess(CLITests.vertex, ["app", "--home", home.path, "--port", "0", "--to", home.path], stderrFile: log)
        let line = try #require(await app.nextLine())
        let url = try #require(URLComponents(string: String(line.split(separator: " ").last ?? "")))
        let port = try #require(url.port)
        let token = try #require(url.queryItems?.first { $0.name == "token" }?.value)
        let request = "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAuthorization: Bearer \(token)\r\n\r\n"
        // The page's event stream is open (its first event came) when SIGINT arrives.
        let channel = try await RawSocket.connect(port: port)
        var received = ""
        var signalled: ContinuousClock.Instant?
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            for try await chunk in inbound {
                received += String(buffer: chunk)
                if signalled == nil, received.contains("event: state\ndata: {") {
                    signalled = .now
                    app.signal(SIGINT)
                }
            }
        }
        let start = try #require(signalled, "no event came: \(received)")
        // The stream ended because the app did: at once, and with success.
        #expect(await app.exited.value == 0)
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(received.contains("event: state\ndata: {"))
        // Nothing alarming said on the way out.
        let said = try String(contentsOf: log, encoding: .utf8)
        #expect(!said.contains("error"), "\(said)")
    }

    /// Two `vertex app` processes (alice, bob) on two domains of one presence server,
    /// driven in headless Chromium by Tests/Browser/app_flow.py.
    @Test("in a real browser: sign in, add a contact, send; bob accepts once, refuses, lets a prompt time out, trusts always",
          .timeLimit(.minutes(5)))
    func browser() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-app-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> URL { directory.appendingPathComponent(name) }
        try "pw\n".write(to: path("password"), atomically: true, encoding: .utf8)
        let server = try await CLITests.ServerProcess.start(domain: "a.test", data: path("data"), log: path("server.log"),
                                                            extra: ["--domain", "b.test"])
        defer { Task { await server.process.stop() } }
        for user in ["alice@a.test", "bob@b.test"] {
            let added = try await CLITests.vertex(["user", "add", user, "--data", path("data").path, "--password-file", path("password").path])
            #expect(added.status == 0, "\(added.stderr)")
        }
        // Files of a few hundred kB to a few MB, each with its own name.
        var random = SplitMix64(seed: 21)
        let names = ["first.bin", "refused.bin", "late.bin", "always.bin", "again.bin"]
        try FileManager.default.createDirectory(at: path("files"), withIntermediateDirectories: true)
        for (index, name) in names.enumerated() {
            let bytes = (0..<(300_000 + index * 700_001)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            try Data(bytes).write(to: path("files").appendingPathComponent(name))
        }
        let promptTimeout = 10
        func app(_ name: String, _ extra: [String] = []) async throws -> (ChildProcess, String) {
            try FileManager.default.createDirectory(at: path("downloads-\(name)"), withIntermediateDirectories: true)
            let process = try ChildProcess(CLITests.vertex, ["app", "--home", path("home-\(name)").path, "--port", "0",
                                                             "--to", path("downloads-\(name)").path] + extra,
                                           stderrFile: path("app-\(name).log"))
            guard let line = await process.nextLine(), let url = line.split(separator: " ").last, url.hasPrefix("http://127.0.0.1:") else {
                await process.stop()
                throw CLITests.CLIFailure("vertex app did not print its URL: \((try? String(contentsOf: path("app-\(name).log"), encoding: .utf8)) ?? "")")
            }
            return (process, String(url))
        }
        let (alice, aliceURL) = try await app("alice")
        let (bob, bobURL) = try await app("bob", ["--prompt-timeout", "\(promptTimeout)"])
        defer {
            Task {
                await alice.stop()
                await bob.stop()
            }
        }
        let screenshots = CLITests.packageRoot.appendingPathComponent(".build/screenshots")
        let flow = try await ChildProcess.run(ChildProcess.env, [
            "python3", CLITests.packageRoot.appendingPathComponent("Tests/Browser/app_flow.py").path,
            "--alice-url", aliceURL, "--bob-url", bobURL, "--server", "127.0.0.1:\(server.port)", "--password", "pw",
            "--files", path("files").path, "--screenshots", screenshots.path, "--prompt-timeout", "\(promptTimeout)",
        ], timeout: .seconds(240))
        let logs = ["app-alice.log", "app-bob.log"].map { (try? String(contentsOf: path($0), encoding: .utf8)) ?? "" }.joined(separator: "\n")
        #expect(flow.status == 0, "\(flow.stdout)\n\(flow.stderr)\n\(logs)")
        #expect(flow.stdout.hasSuffix("ok\n"), "\(flow.stdout)")

        // Byte-exact on bob's disk: what he accepted, and nothing of what he did not.
        let received = path("downloads-bob")
        for name in ["first.bin", "always.bin", "again.bin"] {
            let sent = try Data(contentsOf: path("files").appendingPathComponent(name))
            #expect(try Data(contentsOf: received.appendingPathComponent(name)) == sent, "\(name)")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: received.path)
        #expect(Set(left) == ["first.bin", "always.bin", "again.bin"], "\(left)")
        // alice's uploads were removed once sent.
        #expect(try FileManager.default.contentsOfDirectory(atPath: path("home-alice").appendingPathComponent("app-uploads").path).isEmpty)
        // The trust bob gave with "always" is the CLI's too.
        let trusted = try await SQLiteNodeStore(home: path("home-bob")).authorizedSenders(for: try Q2QAddress("bob@b.test"))
        #expect(trusted == [try Q2QAddress("alice@a.test")])
    }
}

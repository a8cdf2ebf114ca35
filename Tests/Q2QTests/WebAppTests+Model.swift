import Foundation
import NIOCore
import Q2Q
import Testing
import VertexTestSupport
@testable import VertexWebApp

/// The app's model in process, against a presence server on loopback: what the routes
/// call, with the inputs a page (or anyone holding the token) could send.
extension WebAppTests {
    /// A VertexApp for alice, registered on `domain`, with its node on loopback.
    static func makeApp(in domain: TestDomain, refresh: Duration = .seconds(15)) async throws -> (VertexApp, SQLiteNodeStore, URL) {
        let home = domain.directory.appendingPathComponent("home-app-\(UUID().uuidString)")
        let store = try SQLiteNodeStore(home: home)
        try await store.setServer(domain.hostPort, for: domain.name)
        let alice = try Q2QAddress("alice@\(domain.name)")
        _ = try await domain.store.addUser(alice, password: try PasswordHash(hashing: Array("pw".utf8), logN: 10), now: Date())
        _ = try await PresenceClient(store: store).register(alice, password: Array("pw".utf8))
        let node = Q2QNode(store: store, configuration: .init(listenHost: "127.0.0.1"))
        let configuration = VertexAppConfiguration(downloads: home.appendingPathComponent("downloads"),
                                                   uploads: home.appendingPathComponent("uploads"), refreshInterval: refresh)
        return (VertexApp(store: store, node: node, configuration: configuration), store, home)
    }

    static func body(_ bytes: [UInt8]) -> AsyncStream<ByteBuffer> {
        AsyncStream { continuation in
            continuation.yield(ByteBuffer(bytes: bytes))
            continuation.finish()
        }
    }

    @Test("the app refuses what a page should not ask, each with one clear line, and keeps nothing of it")
    func badRequests() async throws {
        try await withDomain { domain in
            let (app, store, home) = try await Self.makeApp(in: domain)
            try await app.start()
            func refusal(_ kind: VertexAppError.Kind, _ action: () async throws -> Void) async -> String? {
                do {
                    try await action()
                    Issue.record("not refused")
                    return nil
                } catch let error as VertexAppError {
                    #expect(error.kind == kind)
                    #expect(!error.description.contains("\n") && !error.description.isEmpty)
                    return error.description
                } catch {
                    Issue.record("\(error)")
                    return nil
                }
            }
            for name in ["../x", "a/b", ".", "..", "", "x.vertex-partial", "tab\there"] {
                _ = await refusal(.badRequest) { _ = try await app.upload(name: name, body: Self.body([1, 2, 3])) }
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: home.appendingPathComponent("uploads").path).isEmpty)
            _ = await refusal(.notFound) { _ = try await app.send(from: "alice@example.test", to: "bob@example.test", uploads: ["0123"], paths: []) }
            _ = await refusal(.badRequest) { _ = try await app.send(from: "mallory@example.test", to: "bob@example.test", uploads: [], paths: ["/etc/hostname"]) }
            _ = await refusal(.badRequest) { _ = try await app.send(from: "alice@example.test", to: "not an address", uploads: [], paths: []) }
            _ = await refusal(.badRequest) { _ = try await app.send(from: "alice@example.test", to: "bob@example.test", uploads: [], paths: ["/no/such/file"]) }
            _ = await refusal(.badRequest) { try await app.saveContact(address: "bob", name: nil, server: nil) }
            _ = await refusal(.badRequest) { try await app.saveContact(address: "bob@example.test", name: "a\u{7}b", server: nil) }
            _ = await refusal(.badRequest) { try await app.saveContact(address: "bob@example.test", name: String(repeating: "x", count: 101), server: nil) }
            _ = await refusal(.badRequest) { try await app.saveContact(address: "bob@example.test", name: "Bob", server: "no port") }
            _ = await refusal(.notFound) { try await app.removeContact(address: "bob@example.test") }
            _ = await refusal(.badRequest) { _ = try await app.signIn(address: "alice@example.test", password: "", server: nil, createAccount: false) }
            let wrong = await refusal(.failed) { _ = try await app.signIn(address: "alice@example.test", password: "wrong", server: nil, createAccount: false) }
            #expect(wrong?.contains("wrong password") == true, "\(wrong ?? "")")
            #expect(!app.resolve(prompt: "nothing", with: .once))
            #expect(try await store.contacts().isEmpty)
            // An upload that was good is kept until sent, under its own name.
            let upload = try await app.upload(name: "report.pdf", body: Self.body(Array(repeating: 7, count: 1000)))
            #expect(upload.size == 1000)
            let snapshot = try await app.snapshot()
            #expect(snapshot.identities.map(\.address) == ["alice@example.test"])
            await app.stop()
        }
    }

    @Test("an identity whose presence server could not be reached is received for once it can be", .timeLimit(.minutes(1)))
    func listensAgain() async throws {
        try await withDomain { domain in
            let (app, store, _) = try await Self.makeApp(in: domain, refresh: .milliseconds(300))
            let nowhere = try RefusingPort()
            defer { nowhere.release() }
            try await store.setServer(HostPort(host: "127.0.0.1", port: nowhere.port), for: domain.name)
            try await app.start()
            var snapshot = try await app.snapshot()
            #expect(snapshot.identities.first?.problem?.contains("cannot receive as alice@example.test") == true, "\(snapshot.identities)")
            #expect(snapshot.services.isEmpty)
            #expect(snapshot.errors.count == 1)
            // A few refreshes fail too (their retry words the outage differently) before
            // the server can be reached.
            try await Task.sleep(for: .seconds(1))
            try await store.setServer(domain.hostPort, for: domain.name)
            while snapshot.services.isEmpty {
                try await Task.sleep(for: .milliseconds(100))
                snapshot = try await app.snapshot()
            }
            #expect(snapshot.services == ["alice@example.test file-transfer"])
            #expect(snapshot.identities.first?.problem == nil)
            // The failure was said once, not at every retry.
            #expect(snapshot.errors.count == 1, "\(snapshot.errors)")
            await app.stop()
        }
    }
}

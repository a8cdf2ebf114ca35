import AMP
import Foundation
import NIOCore
@testable import Q2Q
import Testing
import VertexTestSupport

/// A command for the cache tests: adds two numbers, and says who asked.
private enum Add: AMPCommand {
    static let name = "Add"
    struct Arguments: Codable, Sendable { var a: Int; var b: Int }
    struct Response: Codable, Sendable { var sum: Int; var caller: String }
}

private func adding() -> @Sendable (Q2QAddress) -> AMPResponders {
    { peer in
        var responders = AMPResponders()
        responders.register(Add.self) { arguments, _ in
            Add.Response(sum: arguments.a + arguments.b, caller: peer.description)
        }
        return responders
    }
}

@Suite("The AMP connection cache")
struct AMPConnectionCacheTests {
    static let alice = try! Q2QAddress("alice@example.test")
    static let bob = try! Q2QAddress("bob@example.test")

    @Test("one connection per (from, to, service), shared by concurrent callers; the listener knows the caller; reopened after it drops")
    func sharedAndReopened() async throws {
        try await withDomain { domain in
            let aliceNode = try await makeNode("alice@example.test", in: domain)
            let bobNode = try await makeNode("bob@example.test", in: domain)
            let listener = try await bobNode.serveAMP(as: Self.bob, service: "calc", responders: adding())

            let answers = try await withThrowingTaskGroup(of: Add.Response.self) { group in
                for i in 0..<20 {
                    group.addTask {
                        try await aliceNode.call(from: Self.alice, to: Self.bob, service: "calc", methods: .tcp, Add.self, .init(a: i, b: 1))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.map(\.sum).sorted() == Array(1...20))
            #expect(answers.allSatisfy { $0.caller == Self.alice.description })
            #expect(await aliceNode.ampConnections.count == 1)

            let first = try await aliceNode.ampConnection(from: Self.alice, to: Self.bob, service: "calc", methods: .tcp)
            let again = try await aliceNode.ampConnection(from: Self.alice, to: Self.bob, service: "calc", methods: .tcp)
            #expect(first === again)

            // Bob's side cached the connection alice opened: bob calling alice's "calc"
            // back uses it (alice serves nothing on it, so the call is unhandled, but
            // it is answered over the same connection rather than failing to dial).
            let back = try await bobNode.ampConnection(from: Self.bob, to: Self.alice, service: "calc")
            #expect(back.remoteAddress?.port == first.localAddress?.port)

            await first.close()
            try await Task.sleep(for: .milliseconds(100))
            let reopened = try await aliceNode.call(from: Self.alice, to: Self.bob, service: "calc", methods: .tcp, Add.self, .init(a: 2, b: 3))
            #expect(reopened.sum == 5)
            let second = try await aliceNode.ampConnection(from: Self.alice, to: Self.bob, service: "calc", methods: .tcp)
            #expect(second !== first && second.channel.isActive)

            await listener.close()
            await aliceNode.shutdown()
            await bobNode.shutdown()
        }
    }

    @Test("a connection nobody holds is closed after the idle timeout; a held one is not")
    func idleClose() async throws {
        try await withDomain { domain in
            var configuration = Q2QNodeConfiguration(listenHost: "127.0.0.1")
            configuration.ampIdleTimeout = .milliseconds(400)
            let aliceNode = try await makeNode("alice@example.test", in: domain, configuration: configuration)
            let bobNode = try await makeNode("bob@example.test", in: domain)
            let listener = try await bobNode.serveAMP(as: Self.bob, service: "calc", responders: adding())

            try await aliceNode.withAMPConnection(from: Self.alice, to: Self.bob, service: "calc") { connection in
                try await Task.sleep(for: .milliseconds(1_200))
                #expect(connection.channel.isActive, "held through three idle periods")
                #expect(try await connection.call(Add.self, .init(a: 1, b: 1)).sum == 2)
            }
            let connection = try await aliceNode.ampConnection(from: Self.alice, to: Self.bob, service: "calc")
            try await Task.sleep(for: .milliseconds(1_200))
            #expect(await aliceNode.ampConnections.count == 0, "dropped from the cache once idle")
            let closed: Void? = try? await withTimeout(TestTime.scaled(.seconds(10)), "the idle connection closing") {
                try await connection.channel.closeFuture.get()
            }
            #expect(closed != nil)

            await listener.close()
            await aliceNode.shutdown()
            await bobNode.shutdown()
        }
    }
}

import AMP
import Foundation
import NIOCore
import NIOPosix
import Q2Q
import Testing

@Suite("Presence server under bad clients")
struct PresenceRobustnessTests {
    /// One raw TCP client: sends `bytes`, then either closes or holds the connection
    /// open without reading (half-open from the server's point of view).
    static func rawClient(port: Int, bytes: [UInt8], hold: Bool) async throws -> (any Channel)? {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port).get()
        if !bytes.isEmpty { try await channel.writeAndFlush(ByteBuffer(bytes: bytes)) }
        if hold { return channel }
        try? await channel.close()
        return nil
    }

    static func box(_ pairs: [(String, [UInt8])]) -> [UInt8] {
        var bytes: [UInt8] = []
        for (key, value) in pairs {
            bytes += [0, UInt8(key.utf8.count)] + Array(key.utf8)
            bytes += [UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
        }
        return bytes + [0, 0]
    }

    @Test("garbage, oversized boxes, unknown commands and half-open connections leave others served")
    func manyBadClients() async throws {
        // The good client never authenticates; on a machine loaded by the other suites its
        // 100 calls have taken longer than the 30 s an unauthenticated connection lives.
        // The 81 clients all come from 127.0.0.1: room for them past the per-source cap
        // (HardeningTests covers the caps).
        try await withDomain(configure: {
            $0.unauthenticatedLifetime = .seconds(300)
            $0.maximumUnauthenticatedPerSource = 1_000
        }) { domain in
            var random = SystemRandomNumberGenerator()
            let bad: [([UInt8], Bool)] = (0..<80).map { index in
                switch index % 8 {
                case 0: return ((0..<512).map { _ in UInt8.random(in: 0...255, using: &random) }, false)
                case 1: return ([0xFF, 0xFF] + Array(repeating: 0x41, count: 300), false)          // key too long
                case 2: return (Self.box([("_command", Array("Nope".utf8)), ("_ask", Array("1".utf8))]), true)
                case 3: return (Self.box([("_command", Array("identify".utf8)), ("_ask", Array("1".utf8)),
                                          ("subject", Array("bad address@@".utf8))]), true)
                case 4: return (Self.box([("_command", Array("sign".utf8)), ("_ask", Array("1".utf8)),
                                          ("certificate_request", [1, 2, 3]), ("password", [0])]), true)
                case 5: return (Array(Self.box([("_command", Array("identify".utf8))]).prefix(9)), true)  // half a box
                case 6: return ([], true)                                                            // connects, says nothing
                default:  // a box that keeps growing past the 1 MiB limit
                    return ((0..<20).flatMap { _ in Self.box([("k", Array(repeating: 0x62, count: 60_000))]).dropLast(2) }, false)
                }
            }
            let held = try await withThrowingTaskGroup(of: (any Channel)?.self) { group in
                for (bytes, hold) in bad {
                    group.addTask { try await Self.rawClient(port: domain.port, bytes: bytes, hold: hold) }
                }
                // Meanwhile a good client is served throughout.
                group.addTask {
                    let connection = try await AMPConnection.connect(host: "127.0.0.1", port: domain.port)
                    for _ in 0..<50 {
                        let answer = try await connection.call(Identify.self, .init(subject: try Q2QAddress("example.test")))
                        #expect(answer.certificate == domain.server.authority(for: "example.test")!.certificate)
                        _ = try await connection.call(WhoAmI.self, AMPEmpty())
                    }
                    await connection.close()
                    return nil
                }
                var held: [any Channel] = []
                for try await channel in group { if let channel { held.append(channel) } }
                return held
            }
            // With the half-open ones still connected, a new client registers.
            _ = try await domain.store.addUser(try Q2QAddress("alice@example.test"),
                                               password: try PasswordHash(hashing: Array("pw".utf8), logN: 10), now: Date())
            let identity = try await domain.client().register(try Q2QAddress("alice@example.test"), password: Array("pw".utf8),
                                                              server: domain.hostPort)
            #expect(identity.address.description == "alice@example.test")
            for channel in held { try? await channel.close() }
        }
    }
}

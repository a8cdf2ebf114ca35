import AMP
import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
@testable import Q2Q
import Testing
import VertexTestSupport
import X509

/// The findings of ../shared/reviews/security-review.md, each as the attack it describes
/// (they fail on the code the review read).
@Suite("Security review regressions")
struct SecurityTests {
    static let mallory = try! Q2QAddress("mallory@example.test")
    static let bob = try! Q2QAddress("bob@example.test")
    static var packageRoot: URL { CLITests.packageRoot }

    /// `identity`'s certificate and private key in one PEM file (what Python's ssl loads).
    static func writePEM(of identity: Q2QIdentity, to url: URL) throws {
        let pem = try identity.certificate.certificate.serializeAsPEM().pemString + "\n" + identity.privateKey.pemRepresentation + "\n"
        try pem.write(to: url, atomically: true, encoding: .utf8)
    }

    // MARK: H1

    @Test("H1: a TLS session resumed from mallory's connection on one that claims bob is refused for every command")
    func resumedSessionClaimingAnother() async throws {
        try await withDomain { domain in
            let malloryNode = try await makeNode("mallory@example.test", in: domain)
            let bobNode = try await makeNode("bob@example.test", in: domain)
            let identity = try await malloryNode.identity(Self.mallory)
            let pem = domain.directory.appendingPathComponent("mallory.pem")
            try Self.writePEM(of: identity, to: pem)
            let run = try await ChildProcess.run(ChildProcess.env, [
                "python3", Self.packageRoot.appendingPathComponent("scripts/interop/tls_resume_attack.py").path,
                "127.0.0.1:\(domain.port)", "example.test", Self.mallory.description, pem.path, Self.bob.description,
            ], timeout: .seconds(120))
            #expect(run.status == 0, "\(run.stderr)")
            let steps = run.stdout.split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            }
            try #require(steps.count == 6, "\(run.stdout)\(run.stderr)")
            // The honest connection works and hands out a ticket: the attack is possible.
            #expect(steps[0]["outcome"] as? String == "answered")
            #expect(steps[0]["ticket"] as? Bool == true)
            for step in steps.dropFirst() {
                let name = step["step"] as? String ?? "?"
                // The ticket was taken (the session resumed at the TLS level), and then
                // the connection was closed before any command ran as bob.
                #expect(step["resumed"] as? Bool == true, "\(name): \(step)")
                #expect(step["outcome"] as? String == "closed", "\(name): \(step)")
            }
            #expect(domain.server.listenerCount == 0)
            await malloryNode.shutdown()
            await bobNode.shutdown()
        }
    }

    // MARK: H2

    /// `command` with `arguments` as one request box, tag `tag`.
    static func request<Arguments: Encodable>(_ command: String, _ arguments: Arguments, tag: String) throws -> ByteBuffer {
        var box = try AMPBoxEncoder().encode(arguments)
        box.append(key: "_command", string: command)
        box.append(key: "_ask", string: tag)
        return try box.serialized()
    }

    @Test("H2: a command written in clear right behind secure, in one segment, never runs (sign with the right password issues nothing)")
    func pipelinedClearTextAfterSecure() async throws {
        try await withDomain(users: ["alice@example.test": "s3cret"]) { domain in
            let alice = try Q2QAddress("alice@example.test")
            let csr = try Q2QCertificateRequest(address: alice, key: P256.Signing.PrivateKey())
            var bytes = try Self.request("secure", Secure.Arguments(from: nil, to: try Q2QAddress("example.test"), authorize: false), tag: "1")
            var sign = try Self.request("sign", Sign.Arguments(certificateRequest: csr, password: Array("s3cret".utf8)), tag: "2")
            bytes.writeBuffer(&sign)
            let (received, _) = try await RawSocket.exchange(port: domain.port, bytes: Array(bytes.readableBytesView), window: .seconds(2))
            // The answer to secure comes back in clear; nothing that answers sign does
            // (what follows it is TLS, and our bytes were no ClientHello).
            let text = String(decoding: received, as: UTF8.self)
            #expect(text.contains("_answer"))
            #expect(!text.contains("certificate"))
            #expect(try await domain.store.issuedCertificates(for: nil).isEmpty)
        }
    }

    // MARK: H3

    @Test("H3: a receiver that stops reading and keeps granting credit holds its sender, and the server's memory stays bounded (measured RSS)")
    func relayMemoryIsBounded() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-h3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("data")
        let server = try await CLITests.ServerProcess.start(data: data, log: directory.appendingPathComponent("server.log"))
        defer { Task { await server.process.stop() } }
        let passwordFile = directory.appendingPathComponent("password")
        try "pw\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        let hostPort = HostPort(host: "127.0.0.1", port: server.port)
        var identities: [Q2QIdentity] = []
        var clients: [PresenceClient] = []
        for name in ["r", "s"] {
            let address = try Q2QAddress("\(name)@example.test")
            let added = try await CLITests.vertex(["user", "add", address.description, "--data", data.path, "--password-file", passwordFile.path])
            try #require(added.status == 0, "\(added.stderr)")
            let client = PresenceClient(store: try SQLiteNodeStore(home: directory.appendingPathComponent("home-\(name)")))
            identities.append(try await client.register(address, password: Array("pw".utf8), server: hostPort))
            clients.append(client)
        }
        let (receiverIdentity, senderIdentity) = (identities[0], identities[1])

        // The receiver: listens, offers a listener id, accepts the relayed channel.
        let receiverChannelID = NIOLockedValueBox<Int?>(nil)
        var receiverResponders = AMPResponders()
        receiverResponders.register(Inbound.self) { _, _ in
            Inbound.Response(listeners: [ListenerOffer(id: "0123456789abcdef0123456789abcdef", methods: [],
                                                       expires: AmpTime(Date() + 60), description: "")])
        }
        receiverResponders.registerImmediate(Virtual.self) { arguments, _ in
            receiverChannelID.withLockedValue { $0 = arguments.id }
            return Virtual.Response(window: ChannelWindow.defaultSize)
        }
        receiverResponders.registerImmediate(Write.self) { _, _ in AMPEmpty() }
        let receiver = try await clients[0].withNewConnection(to: hostPort, responders: receiverResponders) { connection in
            let authority = try await clients[0].identify("example.test", on: connection)
            try await clients[0].secure(connection, domain: "example.test", authority: authority, as: receiverIdentity)
        }
        _ = try await receiver.call(Listen.self, .init(from: receiverIdentity.address, protocols: ["sink"], description: ""))

        // The sender: counts the credit the relay passes on, and any close.
        let credit = NIOLockedValueBox(0)
        let closed = NIOLockedValueBox(false)
        var senderResponders = AMPResponders()
        senderResponders.registerImmediate(Credit.self) { arguments, _ in
            credit.withLockedValue { $0 += arguments.bytes }
            return AMPEmpty()
        }
        senderResponders.registerImmediate(Close.self) { _, _ in
            closed.withLockedValue { $0 = true }
            return AMPEmpty()
        }
        let sender = try await clients[1].withNewConnection(to: hostPort, responders: senderResponders) { connection in
            let authority = try await clients[1].identify("example.test", on: connection)
            try await clients[1].secure(connection, domain: "example.test", authority: authority, as: senderIdentity)
        }
        let offers = try await sender.call(Inbound.self, .init(from: senderIdentity.address, to: receiverIdentity.address, service: "sink"))
        let offer = try #require(offers.listeners.first)
        let opened = try await sender.call(Virtual.self, .init(id: 1, listener: offer.identifier, window: ChannelWindow.defaultSize))
        credit.withLockedValue { $0 = opened.window ?? 0 }
        let receiverID = try #require(receiverChannelID.withLockedValue { $0 })

        // The receiver stops reading its socket, for good, but keeps granting credit for
        // what the sender has sent (as if it had consumed it).
        let neverRead = receiver.channel.eventLoop.makePromise(of: Void.self)
        receiver.pauseReading(until: neverRead.futureResult)
        let baseline = try #require(Self.residentBytes(of: server.process.process.processIdentifier))
        var sent = 0
        var credited = 0
        var peak = baseline
        let limit = 128 * 1024 * 1024
        let block = AMPBytes(ByteBuffer(repeating: 0x42, count: 65_535))
        var lastProgress = ContinuousClock.now
        while sent < limit, ContinuousClock.now - lastProgress < .seconds(3), !closed.withLockedValue({ $0 }) {
            if credit.withLockedValue({ $0 }) >= block.buffer.readableBytes {
                credit.withLockedValue { $0 -= block.buffer.readableBytes }
                try await sender.send(Write.self, .init(id: 1, body: block))
                sent += block.buffer.readableBytes
                lastProgress = ContinuousClock.now
            } else {
                // Grant what was sent a moment ago (forwarded by now), a MiB at a time.
                if sent - credited >= 2 << 20 {
                    try receiver.sendWithoutWaiting(Credit.self, .init(id: receiverID, bytes: 1 << 20))
                    credited += 1 << 20
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            if sent % (4 << 20) < block.buffer.readableBytes, let rss = Self.residentBytes(of: server.process.process.processIdentifier) {
                peak = max(peak, rss)
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        peak = max(peak, Self.residentBytes(of: server.process.process.processIdentifier) ?? 0)
        print("H3: the sender was held after \(sent >> 10) KiB; the server's RSS grew by \((peak - baseline) >> 10) KiB")
        #expect(!closed.withLockedValue { $0 }, "the relay closed the channel: the credits were honest")
        // Held: the sender stopped getting credit long before the 128 MiB it would send.
        #expect(sent < 48 << 20, "\(sent >> 20) MiB sent to a receiver that reads nothing")
        #expect(peak - baseline < 48 << 20, "the server grew by \((peak - baseline) >> 20) MiB")
        neverRead.succeed()
        await sender.close()
        await receiver.close()
    }

    /// A process's resident memory, from /proc.
    static func residentBytes(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kilobytes * 1024
    }
}

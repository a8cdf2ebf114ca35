import ArgumentParser
import Foundation
import Logging
import Q2Q
import VertexApps

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Everything on loopback: two domains, two people, a file sent over each connection method.",
        discussion: """
            Starts presence servers for example.com and example.org on 127.0.0.1 (in a \
            temporary directory), creates alice@example.com and bob@example.org, registers \
            both, has bob receive files and alice send him a generated file over each \
            method, and prints what happened. Nothing outside the temporary directory is \
            touched, and it is removed afterwards.
            """
    )

    @Option(help: "Size of the file sent, in MiB.")
    var size: Int = 32

    @Flag(help: "Keep the temporary directory (its path is printed).")
    var keep = false

    func validate() throws {
        guard (1...4096).contains(size) else { throw ValidationError("--size must be 1…4096 MiB") }
    }

    func run() async throws {
        var quiet = Logger(label: "vertex.demo")
        quiet.logLevel = .error
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-demo-\(UUID().uuidString)")
        defer { if !keep { try? FileManager.default.removeItem(at: root) } }
        let alice = try Q2QAddress("alice@example.com")
        let bob = try Q2QAddress("bob@example.org")
        let password = Array("demo password".utf8)

        step("presence servers for example.com and example.org on 127.0.0.1")
        var servers: [String: (PresenceServer, HostPort)] = [:]
        for domain in ["example.com", "example.org"] {
            let store = try SQLitePresenceStore(directory: root.appendingPathComponent("server-\(domain)"))
            let user = domain == "example.com" ? alice : bob
            _ = try await store.addUser(user, password: try PasswordHash(hashing: password), now: Date())
            var configuration = PresenceServerConfiguration(domains: [domain], host: "127.0.0.1", port: 0)
            // example.org's server verifies alice against example.com's CA, fetched from here.
            configuration.peerServers = servers.mapValues(\.1)
            let server = try await PresenceServer.start(configuration: configuration, store: store, logger: quiet)
            servers[domain] = (server, HostPort(server.localAddress!)!)
        }

        step("registering alice@example.com and bob@example.org (new P-256 keys, certificates over TLS)")
        var nodes: [Q2QAddress: Q2QNode] = [:]
        for address in [alice, bob] {
            let store = try SQLiteNodeStore(home: root.appendingPathComponent("home-\(address.resource)"))
            for (domain, (_, hostPort)) in servers { try await store.setServer(hostPort, for: domain) }
            _ = try await PresenceClient(store: store, logger: quiet).register(address, password: password)
            nodes[address] = Q2QNode(store: store, configuration: .init(listenHost: "127.0.0.1"), logger: quiet)
        }

        step("bob listens for \(FileTransferMessage.service)")
        let listener = try await nodes[bob]!.listen(as: bob, service: FileTransferMessage.service, description: "demo")
        let inbox = root.appendingPathComponent("bob-received")
        let receiving = Task { () -> [FileReceiveSummary] in
            var summaries: [FileReceiveSummary] = []
            for await stream in listener.connections {
                let directory = inbox.appendingPathComponent("\(summaries.count + 1)")
                try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                if let summary = try? await FileReceiver.receive(stream, into: directory, decide: { _, peer in
                    peer == alice ? nil : "only alice@example.com may send in this demo"
                }) {
                    summaries.append(summary)
                }
            }
            return summaries
        }

        let file = root.appendingPathComponent("demo-\(size)MiB.bin")
        try writeDemoFile(file, bytes: size << 20)
        step("alice sends \(file.lastPathComponent) (\(size) MiB) over each method")
        var rows: [(method: String, bytes: Int64, seconds: Double, verified: Bool, note: String)] = []
        let methods: [(String, Q2QMethodPolicy)] = [("tcp", .tcp), ("ptcp", Q2QMethodPolicy("ptcp")!),
                                                     ("rptcp", Q2QMethodPolicy("rptcp")!), ("relay", .relay)]
        for (label, policy) in methods {
            do {
                let stream = try await nodes[alice]!.connect(from: alice, to: bob, service: FileTransferMessage.service, methods: policy)
                let summary = try await FileSender.send([file], over: stream)
                rows.append((stream.method == .virtual ? "relay (virtual)" : stream.method.description, summary.bytesSent,
                             summary.seconds, summary.verified, ""))
            } catch {
                rows.append((label, 0, 0, false, "\(error)"))
            }
        }
        await listener.close()
        let received = await receiving.value
        for node in nodes.values { await node.shutdown() }
        for (server, _) in servers.values { await server.close() }

        print("")
        print(pad("method", 24) + pad("bytes", 14, right: true) + pad("time", 10, right: true)
              + pad("MB/s", 9, right: true) + "  verified")
        for row in rows {
            let rate = row.seconds > 0 ? Double(row.bytes) / row.seconds / 1_000_000 : 0
            print(pad(row.method, 24) + pad(row.bytes.formatted(), 14, right: true)
                  + pad(String(format: "%.2f s", row.seconds), 10, right: true)
                  + pad(String(format: "%.1f", rate), 9, right: true)
                  + "  " + (row.verified ? "yes (SHA-256)" : "NO \(row.note)"))
        }
        print("")
        print("bob's inbox: \(received.flatMap(\.files).count) files, every one under its final name only after its SHA-256 matched.")
        if keep { print("kept: \(root.path)") }
        if rows.contains(where: { !$0.verified }) { throw ExitCode.failure }
    }

    private func step(_ text: String) {
        print("• \(text)")
        fflush(nil)
    }

    private func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let padding = String(repeating: " ", count: max(0, width - text.count))
        return right ? padding + text : text + padding
    }

    /// Incompressible bytes (xorshift64), so that nothing on the way gets it cheaply.
    private func writeDemoFile(_ url: URL, bytes: Int) throws {
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw CLIError("cannot create \(url.path)")
        }
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        var state: UInt64 = 0x243F_6A88_85A3_08D3
        var chunk = [UInt64](repeating: 0, count: 1 << 17)
        var written = 0
        while written < bytes {
            for index in chunk.indices {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                chunk[index] = state
            }
            let count = min(bytes - written, chunk.count * 8)
            try chunk.withUnsafeBytes { try handle.write(contentsOf: $0.prefix(count)) }
            written += count
        }
    }
}

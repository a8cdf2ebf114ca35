import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import VertexTestSupport
import X509

/// PTCP through ../shared/tools/netlab's shaped links and NAT (real kernel namespaces,
/// real UDP), with TLS 1.3 on top. Needs root, as `.ci/run` has.
@Suite("PTCP in netlab", .serialized)
struct NetlabPTCPTests {
    static let netlab = Netlab.tool
    static let bench = ChildProcess.built("ptcp-bench")

    @Test("site A behind a cone NAT → the server over 50 ms RTT, 1 % loss, 100 Mbit/s (and a 200 ms link with reordering): 3 MB byte-exact over TLS 1.3",
          arguments: [["--rtt", "50", "--loss", "1", "--rate", "100"], ["--rtt", "200", "--loss", "0.1", "--rate", "20", "--reorder", "1"]])
    func shapedLink(shape: [String]) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ptcp-netlab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tls = try TestTLS()
        try tls.certificatePEM.write(to: directory.appendingPathComponent("cert.pem"), atomically: true, encoding: .utf8)
        try tls.keyPEM.write(to: directory.appendingPathComponent("key.pem"), atomically: true, encoding: .utf8)

        let lab = "pt\(UInt32.random(in: 0..<1_000_000))"
        // Through a shell with the output in a file: the link shapers netlab leaves running
        // would otherwise hold our pipe open.
        let log = directory.appendingPathComponent("netlab.log").path
        let command = ([Self.netlab.path, "--name", lab, "up", "--nat-a", "cone", "--nat-b", "none"] + shape).joined(separator: " ")
        let up = try await Self.runDetached("\(command) > '\(log)' 2>&1")
        try #require(up == 0, "netlab up failed (it needs root): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        defer { _ = Task { _ = try? await Self.runDetached("\(Self.netlab.path) --name \(lab) down > /dev/null 2>&1") } }
        do {
            let sink = try ChildProcess(Self.netlab, ["--name", lab, "exec", "server", "--", Self.bench.path, "sink", "--port", "9000", "--check",
                                                     "--tls-certificate", directory.appendingPathComponent("cert.pem").path,
                                                     "--tls-key", directory.appendingPathComponent("key.pem").path])
            #expect(await sink.nextLine()?.hasPrefix("listening") == true)
            let bytes = 3_000_000
            let sent = try await ChildProcess.run(Self.netlab, ["--name", lab, "exec", "a", "--", Self.bench.path, "send",
                                                                "--to", "198.51.100.10:9000", "--bytes", String(bytes),
                                                                "--tls-trust", directory.appendingPathComponent("cert.pem").path],
                                                         timeout: .seconds(120))
            #expect(sent.status == 0, "status \(sent.status) (killed if it ran 120 s): \(sent.stdout) \(sent.stderr)")
            let report = await sink.nextLine(timeout: .seconds(30)) ?? ""
            #expect(report.hasPrefix("received \(bytes) bytes") && report.hasSuffix("pattern ok"), "\(report)")
            await sink.stop()
        }
        _ = try await Self.runDetached("\(Self.netlab.path) --name \(lab) down > /dev/null 2>&1")
    }

    @Test("simultaneous open through two cone NATs with no rendezvous: both sides connect at once, both streams arrive")
    func simultaneousOpen() async throws {
        let lab = "ps\(UInt32.random(in: 0..<1_000_000))"
        let up = try await Self.runDetached("\(Self.netlab.path) --name \(lab) up --nat-a cone --nat-b cone > /dev/null 2>&1")
        try #require(up == 0, "netlab up failed (it needs root)")
        defer { _ = Task { _ = try? await Self.runDetached("\(Self.netlab.path) --name \(lab) down > /dev/null 2>&1") } }
        // Each NAT keeps the private port (netlab's cone NAT preserves ports), so each side
        // knows where the other will appear. Each side's first SYNs hit the other NAT before
        // that NAT has sent anything out, and are dropped; the retransmissions get through.
        let port = "40000"
        func punch(from node: String, to peer: String) async throws -> ChildProcess.Run {
            try await ChildProcess.run(Self.netlab, ["--name", lab, "exec", node, "--", Self.bench.path, "punch",
                                                     "--port", port, "--peer", "\(peer):\(port)", "--bytes", "1000000"])
        }
        async let a = punch(from: "a", to: "192.0.2.10")
        async let b = punch(from: "b", to: "203.0.113.10")
        let (fromA, fromB) = try await (a, b)
        #expect(fromA.status == 0 && fromA.stdout.contains("both directions intact"), "\(fromA.stdout)\(fromA.stderr)")
        #expect(fromB.status == 0 && fromB.stdout.contains("both directions intact"), "\(fromB.stdout)\(fromB.stderr)")
        _ = try await Self.runDetached("\(Self.netlab.path) --name \(lab) down > /dev/null 2>&1")
    }

    /// Runs a shell command and waits only for it to exit: the link shapers netlab starts
    /// keep running and would hold any pipe of ours open forever.
    /// (Foundation's Process notices an exit through a descriptor that those shapers
    /// inherit, so it is not used here: system(3) waits for the shell itself.)
    static func runDetached(_ command: String) async throws -> Int32 {
        await onOwnThread { system(command) }
    }
}

import Foundation
import Testing
import VertexTestSupport

/// `vertex doctor` in netlab: NAT classes as RFC 5780's tests find them against a
/// presence server with a second address, per-method peer reports, and a server that
/// does not answer.
extension NetlabTests {
    /// `vertex doctor --json` run as alice at site A, decoded.
    static func doctor(_ across: Across, _ extra: [String] = []) async throws -> (json: [String: Any], status: Int32, stderr: String) {
        let run = try await across.lab.vertex(on: "a", ["doctor", "--as", "alice@example.test", "--json", "--home", across.path("home-alice")] + extra)
        let json = (try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8))) as? [String: Any] ?? [:]
        return (json, run.status, run.stderr + run.stdout)
    }

    static let secondAddress = ["--alternate-address", "198.51.100.11"]

    @Test("vertex doctor classifies site A's NAT: none, cone, symmetric, and UDP blocked",
          .serialized, arguments: ["none", "cone", "symmetric", "blocked"])
    func doctorClassifiesNAT(kind: String) async throws {
        try await Self.across(natA: kind == "blocked" ? "cone" : kind, natB: "cone", serverArguments: Self.secondAddress) { across in
            if kind == "blocked" {
                #expect(try await across.lab.netlab(["block", "a", "udp"]).status == 0)
            }
            let (json, status, output) = try await Self.doctor(across)
            let nat = json["nat"] as? [String: Any] ?? [:]
            #expect(json["serverReachable"] as? Bool == true, "\(output)")
            switch kind {
            case "none":
                #expect(nat["mapping"] as? String == "none", "\(output)")
                #expect(nat["filtering"] as? String == "endpoint-independent", "\(output)")
                #expect(status == 0, "\(output)")
            case "cone":
                #expect(nat["mapping"] as? String == "endpoint-independent", "\(output)")
                #expect(nat["filtering"] as? String == "address-and-port-dependent", "\(output)")
                #expect(nat["portPreserved"] as? Bool == true, "\(output)")
                #expect(status == 0, "\(output)")
            case "symmetric":
                #expect(nat["mapping"] as? String == "address-and-port-dependent", "\(output)")
                #expect(nat["filtering"] as? String == "address-and-port-dependent", "\(output)")
                #expect(status == 2, "relayed for most peers: \(output)")
            default:
                #expect(nat["udpWorks"] as? Bool == false, "\(output)")
                let checks = json["checks"] as? [[String: Any]] ?? []
                let udp = checks.first { $0["name"] as? String == "UDP" }
                #expect(udp?["verdict"] as? String == "problem", "\(output)")
                #expect((udp?["advice"] as? String)?.contains("UDP is blocked") == true, "\(output)")
            }
            #expect(nat["serverHasSecondAddress"] as? Bool == (kind != "blocked"), "\(output)")
        }
    }

    @Test("vertex doctor reports the gateway's port-mapping protocol and the mapped address, behind a symmetric NAT")
    func doctorPortMapping() async throws {
        try await Self.across(natA: "symmetric", natB: "cone", portmap: ["a"], serverArguments: Self.secondAddress) { across in
            let (json, status, output) = try await Self.doctor(across)
            let mapping = json["portMapping"] as? [String: Any] ?? [:]
            #expect(mapping["protocolName"] as? String == "NAT-PMP", "\(output)")
            #expect((mapping["external"] as? String)?.hasPrefix("203.0.113.10:") == true || (mapping["external"] as? [String: Any])?["host"] as? String == "203.0.113.10",
                    "\(output)")
            // A symmetric NAT whose router maps ports: peers get direct paths.
            #expect(status == 0, "\(output)")
            // The throwaway mapping is deleted again.
            #expect(try await Self.portMapRules(across.lab, site: "a").isEmpty)
        }
    }

    @Test("vertex doctor --peer: cone/cone (ptcp and relay work), symmetric/symmetric (ptcp fails naming the NAT), bob offline",
          .serialized, arguments: ["cone", "symmetric", "offline"])
    func doctorPeer(kind: String) async throws {
        let nat = kind == "offline" ? "cone" : kind
        try await Self.across(natA: nat, natB: nat, serverArguments: Self.secondAddress) { across in
            if kind == "offline" { await across.serve.stop() }
            let started = ContinuousClock.now
            let (json, status, output) = try await Self.doctor(across, ["--peer", "bob@example.test/echo"])
            let elapsed = ContinuousClock.now - started
            let peer = json["peer"] as? [String: Any] ?? [:]
            let attempts = (peer["attempts"] as? [[String: Any]] ?? []).reduce(into: [String: [String: Any]]()) { $0[$1["method"] as? String ?? ""] = $1 }
            switch kind {
            case "cone":
                #expect(attempts["ptcp"]?["connected"] as? Bool == true, "\(output)")
                #expect(attempts["relay"]?["connected"] as? Bool == true, "\(output)")
                #expect(status == 0, "\(output)")
            case "symmetric":
                #expect(attempts["ptcp"]?["connected"] as? Bool == false, "\(output)")
                #expect((attempts["ptcp"]?["detail"] as? String)?.contains("symmetric") == true, "\(output)")
                #expect(attempts["relay"]?["connected"] as? Bool == true, "\(output)")
                #expect(status == 2, "only the relay: \(output)")
            default:
                #expect(peer["listening"] as? Bool == false, "\(output)")
                #expect(attempts.values.allSatisfy { ($0["detail"] as? String)?.contains("not listening") == true }, "\(output)")
                #expect(status == 3, "\(output)")
            }
            // Bounded: every attempt has a 4 s deadline, run side by side.
            #expect(elapsed < .seconds(60))
        }
    }

    @Test("vertex doctor against a presence server that accepts and never answers: says so within its deadline, exit 4")
    func doctorSilentServer() async throws {
        try await Self.across(natA: "cone", natB: "cone") { across in
            // A TCP port on the server host that accepts and says nothing.
            let silent = try across.lab.start(on: "server", ["python3", "-c", """
                import socket, time
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("198.51.100.10", 8790)); s.listen(16); print("ready", flush=True)
                held = []
                while True:
                    c, _ = s.accept(); held.append(c)
                """], log: across.directory.appendingPathComponent("silent.log"))
            #expect(await silent.nextLine() == "ready")
            let (json, status, output) = try await Self.doctor(across, ["--server", "198.51.100.10:8790"])
            #expect(status == 4, "\(output)")
            #expect(json["serverReachable"] as? Bool == false, "\(output)")
            let checks = json["checks"] as? [[String: Any]] ?? []
            #expect(checks.contains { $0["name"] as? String == "presence server" && $0["verdict"] as? String == "problem" }, "\(output)")
            await silent.stop()
        }
    }
}

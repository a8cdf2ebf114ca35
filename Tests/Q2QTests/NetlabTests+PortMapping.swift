import Foundation
import Testing
import VertexTestSupport

/// Port mapping through netlab's NAT-PMP gateway (`netlab portmap`), which maps with
/// iptables in the site's NAT as a home router does.
extension NetlabTests {
    /// The port-mapping rules in site `site`'s NAT (nat and filter tables).
    static func portMapRules(_ lab: Lab, site: String) async throws -> [String] {
        var rules: [String] = []
        for table in ["nat", "filter"] {
            let listed = try await lab.netlab(["exec", "nat-\(site)", "--", "iptables", "-w", "-t", table, "-S"])
            rules += listed.stdout.split(separator: "\n").map(String.init).filter { $0.contains("netlab-natpmp") }
        }
        return rules
    }

    /// Waits (the mapping runs beside listening) until the gateway at `site` holds a
    /// listener's two mappings, UDP and TCP.
    static func expectBothPortsMapped(_ lab: Lab, site: String) async throws {
        var rules: [String] = []
        for _ in 0..<50 {
            rules = try await portMapRules(lab, site: site)
            if rules.filter({ $0.contains("DNAT") }).count == 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(rules.filter { $0.contains("DNAT") }.count == 2, "\(rules)")
    }

    @Test("bob behind a symmetric NAT whose gateway maps ports: alice behind a cone or symmetric NAT connects directly, byte-exact",
          .serialized, arguments: ["cone", "symmetric"])
    func portMappedListener(natA: String) async throws {
        try await Self.across(natA: natA, natB: "symmetric", portmap: ["b"]) { across in
            try await Self.expectBothPortsMapped(across.lab, site: "b")
            let connected = try await across.connect()
            #expect(connected.echoed, "\(connected.stderr)")
            let method = Self.method(in: connected.stderr)
            #expect(method == "tcp" || method == "ptcp", "\(connected.stderr)")
            // Without tcp, the mapped UDP port is punched to directly too.
            let overUDP = try await across.connect(["--method", "ptcp"])
            #expect(overUDP.echoed, "\(overUDP.stderr)")
            #expect(Self.method(in: overUDP.stderr) == "ptcp", "\(overUDP.stderr)")
        }
    }

    @Test("without a gateway that maps, symmetric/symmetric goes through the relay as before")
    func noGateway() async throws {
        try await Self.across(natA: "symmetric", natB: "symmetric") { across in
            let connected = try await across.connect()
            #expect(connected.echoed, "\(connected.stderr)")
            #expect(Self.method(in: connected.stderr) == "virtual", "\(connected.stderr)")
            // -v says why, from the same tests as vertex doctor.
            #expect(connected.stderr.contains("relayed: your NAT is symmetric"), "\(connected.stderr)")
            let log = (try? String(contentsOfFile: across.path("serve.log"), encoding: .utf8)) ?? ""
            #expect(!log.contains("Fatal") && !log.contains("error:"), "\(log)")
        }
    }

    @Test("mappings are renewed across a lifetime shorter than the test, and deleted when vertex serve stops")
    func renewedAndDeleted() async throws {
        try await Self.across(natA: "cone", natB: "symmetric", portmap: ["b"], serveArguments: ["--portmap-lifetime", "3"]) { across in
            try await Self.expectBothPortsMapped(across.lab, site: "b")
            // Three lifetimes: without renewals the gateway would have dropped them twice.
            try await Task.sleep(for: .seconds(9))
            #expect(try await Self.portMapRules(across.lab, site: "b").filter { $0.contains("DNAT") }.count == 2)
            let connected = try await across.connect(["--method", "tcp,ptcp"])
            #expect(connected.echoed, "\(connected.stderr)")
            across.serve.signal(SIGTERM)
            var left = try await Self.portMapRules(across.lab, site: "b")
            for _ in 0..<50 where !left.isEmpty {
                try await Task.sleep(for: .milliseconds(100))
                left = try await Self.portMapRules(across.lab, site: "b")
            }
            #expect(left.isEmpty, "rules left after vertex serve stopped: \(left)")
        }
    }
}

import Foundation
import Q2Q
import Testing
import VertexTestSupport

/// IPv6 across netlab (`up --ipv6`): every host is dual-stack, the sites' routers are
/// stateful firewalls on IPv6 (no NAT), and users reach the presence server by a name
/// with both addresses.
extension NetlabTests {
    /// "connected to … by ptcp@[2001:db8:b:1::10]:41000" → "2001:db8:b:1::10".
    static func host(in stderr: String) -> String? {
        let line = stderr.split(separator: "\n").first { $0.hasPrefix("connected to ") }
        guard let method = line?.components(separatedBy: " by ").last, let at = method.firstIndex(of: "@") else { return nil }
        return HostPort(String(method[method.index(after: at)...]))?.host
    }

    @Test("IPv6: behind symmetric IPv4 NATs on both sides, alice reaches bob directly over IPv6 (a hole punch through both firewalls), byte-exact")
    func symmetricPairGoesDirectOverIPv6() async throws {
        try await Self.across(natA: "symmetric", natB: "symmetric", ipv6: true) { across in
            let connected = try await across.connect()
            #expect(connected.echoed, "\(connected.stderr)")
            #expect(Self.method(in: connected.stderr) == "ptcp", "\(connected.stderr)")
            #expect(Self.host(in: connected.stderr) == "2001:db8:b:1::10", "\(connected.stderr)")
            // Without IPv6 the same pair can only be relayed: IPv6 is what made it direct.
            let without = try await across.connect(["--no-ipv6"])
            #expect(without.echoed, "\(without.stderr)")
            #expect(Self.method(in: without.stderr) == "virtual", "\(without.stderr)")
            // vertex doctor sees IPv6 working end to end, and expects IPv6 peers to come direct.
            let doctor = try await across.lab.vertex(on: "a", ["doctor", "--lifetime-probe", "1", "--no-portmap", "--home", across.path("home-alice")])
            #expect(doctor.stdout.contains("the server answers over IPv6 and sees you at [2001:db8:a:1::10]:"), "\(doctor.stdout)\(doctor.stderr)")
            #expect(doctor.stdout.contains("a peer with IPv6"), "\(doctor.stdout)")
        }
    }

    @Test("IPv6: dropped at alice's site (her firewall passes no IPv6): IPv4 hole punching still wins, cone to cone")
    func brokenIPv6FallsBackToIPv4() async throws {
        try await Self.across(natA: "cone", natB: "cone", ipv6: true) { across in
            // alice still has her IPv6 address and tries it: every IPv6 packet is lost.
            let dropped = try await across.lab.netlab(["exec", "nat-a", "--", "ip6tables", "-w", "-I", "FORWARD", "-j", "DROP"])
            #expect(dropped.status == 0, "\(dropped.stderr)")
            let connected = try await across.connect()
            #expect(connected.echoed, "\(connected.stderr)")
            #expect(Self.method(in: connected.stderr) == "ptcp", "\(connected.stderr)")
            #expect(Self.host(in: connected.stderr) == "192.0.2.10", "\(connected.stderr)")
        }
    }

    @Test("IPv6: bob reaches the presence server over IPv6 only; alice, over IPv4 only, reaches him through the relay, byte-exact")
    func serverOverIPv6Only() async throws {
        try await Self.across(natA: "symmetric", natB: "symmetric", ipv6: true,
                              servers: ["alice": "198.51.100.10:8788", "bob": "[2001:db8:5::10]:8788"]) { across in
            let whoami = try await across.lab.vertex(on: "b", ["whoami", "--server", "[2001:db8:5::10]:8788"])
            #expect(whoami.stdout.hasPrefix("[2001:db8:b:1::10]:"), "\(whoami.stdout)\(whoami.stderr)")
            let connected = try await across.connect(["--no-ipv6"])
            #expect(connected.echoed, "\(connected.stderr)")
            #expect(Self.method(in: connected.stderr) == "virtual", "\(connected.stderr)")
        }
    }
}

import AMP
import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Q2Q

struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Tell why connections are relayed or fail: the presence server, your NAT and UDP, and with --peer every way to a peer.",
        discussion: """
            Checks, each with a verdict and advice where something is wrong: the presence \
            server (reachable, round trip, clock), your identity (certificate expiry, the \
            pinned CA), your public address as the server sees it, UDP, how your NAT maps \
            and filters (RFC 5780's tests against the server), whether a public peer could \
            reach your tcp@ port (the server tries to connect back to your own address), \
            port mapping on your router, IPv6, carrier-grade NAT, and which methods peers \
            can be expected to use. With --peer, each method is tried on its own.

            Exit codes: 0 all good; 2 connections will be (or, with --peer, only were) \
            relayed; 3 the peer is unreachable; 4 the presence server is unreachable; \
            1 any other error.

              vertex doctor --as alice@example.com
              vertex doctor --as alice@example.com --peer bob@example.org/ssh --json
            """
    )

    @Option(name: .customLong("as"), help: "Your address (default: the only identity in your home).")
    var address: Q2QAddress?

    @Option(help: ArgumentHelp("The presence server to check, HOST:PORT (default: your domain's).", valueName: "host:port"))
    var server: HostPort?

    @Option(help: ArgumentHelp("Also try every method to this service, ADDRESS/SERVICE.", valueName: "address/service"))
    var peer: ServiceTarget?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    @Option(help: ArgumentHelp("How long the probe of your NAT's mapping lifetime leaves a mapping idle, in seconds (1–5).",
                               valueName: "seconds"))
    var lifetimeProbe: Int = 3

    @OptionGroup var node: NodeOptions

    func validate() throws {
        guard (1...5).contains(lifetimeProbe) else { throw ValidationError("--lifetime-probe must be 1–5 seconds") }
    }

    func run() async throws {
        let store = try node.home.openStore()
        let identity = try await Self.identity(address, in: store)
        let client = PresenceClient(store: store)
        let choice = try await client.serverChoice(for: identity.address.domain, explicit: server)
        var report = DoctorReport(address: identity.address.description, server: choice.server.description, serverSource: choice.source.rawValue)
        var doctor = Doctor(identity: identity, client: client, choice: choice, lifetimeProbe: .seconds(lifetimeProbe),
                            portMapping: !node.noPortmap, report: report)
        await doctor.checkSelf()
        report = doctor.report
        if let peer, report.serverReachable {
            let q2q = try node.openNode()
            report.peer = await PeerDiagnosis.run(node: q2q, from: identity.address, to: peer.address, service: peer.service,
                                                  nat: report.nat)
            await q2q.shutdown()
        }
        report.exitCode = report.computeExitCode()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
        fflush(nil)
        if report.exitCode != 0 { throw ExitCode(Int32(report.exitCode)) }
    }

    static func identity(_ address: Q2QAddress?, in store: any NodeStore) async throws -> Q2QIdentity {
        if let address {
            guard let identity = try await store.identity(for: address) else {
                throw CLIError("no identity for \(address) in this home: vertex register \(address) --server HOST:PORT")
            }
            return identity
        }
        let all = try await store.identities()
        guard let only = all.first else { throw CLIError("no identity in this home: vertex register ADDRESS --server HOST:PORT first") }
        guard all.count == 1 else {
            throw CLIError("this home has \(all.count) identities (\(all.map(\.address.description).joined(separator: ", "))): choose one with --as")
        }
        return only
    }
}

/// What `vertex doctor` found (its --json form).
struct DoctorReport: Codable {
    enum Verdict: String, Codable { case ok, info, warning, problem }

    struct Check: Codable {
        var name: String
        var verdict: Verdict
        var detail: String
        var advice: String?
    }

    /// How a peer of each kind is expected to reach this node.
    struct Expectation: Codable {
        var peer: String
        var methods: [String]
    }

    var address: String
    var server: String
    var serverSource: String
    var serverReachable = false
    var roundTripMilliseconds: Double?
    var clockOffsetMilliseconds: Double?
    var publicTCPAddress: String?
    var tcpReachable: Bool?
    var nat: NATBehaviour?
    var portMapping: PortMappingProbe?
    var ipv6: IPv6Probe?
    var checks: [Check] = []
    var expectations: [Expectation] = []
    var peer: PeerDiagnosis?
    var exitCode = 0

    init(address: String, server: String, serverSource: String) {
        self.address = address
        self.server = server
        self.serverSource = serverSource
    }

    mutating func add(_ name: String, _ verdict: Verdict, _ detail: String, advice: String? = nil) {
        checks.append(Check(name: name, verdict: verdict, detail: detail, advice: advice))
    }

    /// 4 server unreachable, 3 peer unreachable, 2 relayed only (or expected to be), 0.
    func computeExitCode() -> Int {
        guard serverReachable else { return 4 }
        if let peer {
            if !peer.reachable { return 3 }
            return peer.directWorked ? 0 : 2
        }
        guard let nat, nat.udpWorks else { return tcpReachable == true ? 0 : 2 }
        let directForMost = nat.punchable || portMapping != nil || tcpReachable == true
        return directForMost ? 0 : 2
    }

    var text: String {
        var lines = ["vertex doctor: \(address), presence server \(server) (\(serverSource))"]
        let width = max(12, checks.map(\.name.count).max() ?? 0)
        for check in checks {
            lines.append("  \(check.verdict.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) "
                         + "\(check.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(check.detail)")
            if let advice = check.advice { lines.append(String(repeating: " ", count: 13 + width) + "→ \(advice)") }
        }
        if !expectations.isEmpty {
            lines.append("peers are expected to reach you by:")
            for expectation in expectations {
                lines.append("  \(expectation.peer.padding(toLength: 30, withPad: " ", startingAt: 0)) \(expectation.methods.joined(separator: ", "))")
            }
        }
        if let peer { lines += peer.lines }
        return lines.joined(separator: "\n")
    }
}

/// The checks of this node and its presence server.
struct Doctor {
    let identity: Q2QIdentity
    let client: PresenceClient
    let choice: PresenceClient.ServerChoice
    let lifetimeProbe: Duration
    let portMapping: Bool
    var report: DoctorReport

    static let deadline: Duration = .seconds(4)

    mutating func checkSelf() async {
        let domain = identity.address.domain
        // The UDP tests and the router run beside the TCP checks.
        let udpTarget = choice.server.socketAddresses(family: .v4).first
        async let nat: NATBehaviour? = {
            guard let udpTarget else { return nil }
            var prober = NATProber(server: udpTarget)
            prober.lifetimeProbe = lifetimeProbe
            return try? await prober.run()
        }()
        async let mapped: Result<PortMappingProbe, PortMappingError>? = portMapping ? await PortMappingProbe.run() : nil
        async let ipv6 = IPv6Probe.run(server: choice.server)

        await checkServer(domain: domain)
        checkIdentity()
        report.nat = await nat
        checkNAT()
        switch await mapped {
        case .success(let probe)?:
            report.portMapping = probe
            report.add("port mapping", .ok, "your router maps ports by \(probe.protocolName) (public \(probe.external)); listeners offer the mapped ports")
        case .failure(let error)?:
            report.add("port mapping", .info, "none: \(error)",
                       advice: report.nat?.punchable == false ? "turning on NAT-PMP, PCP or UPnP on your router would let peers reach you directly" : nil)
        case nil:
            report.add("port mapping", .info, "not tried (--no-portmap)")
        }
        report.ipv6 = await ipv6
        checkIPv6()
        expect()
    }

    // MARK: The server, the clock, the TCP address, reachability

    private mutating func checkServer(domain: String) async {
        let connection: AMPConnection
        let started = ContinuousClock.now
        do {
            connection = try await withDeadline { [client, choice] in try await client.connect(to: choice.server) }
        } catch {
            report.add("presence server", .problem, "cannot reach \(choice.explanation): \(Self.words(error))",
                       advice: "check the address and that the server runs; vertex servers set \(domain) HOST:PORT changes it")
            return
        }
        defer { Task { [connection] in await connection.close() } }
        do {
            let pinned = try await client.store.pinnedAuthority(for: domain)
            let asked = ContinuousClock.now
            let authority = try await withDeadline { [client] in try await client.identify(domain, on: connection) }
            let roundTrip = ContinuousClock.now - asked
            report.serverReachable = true
            report.roundTripMilliseconds = Self.milliseconds(roundTrip)
            report.add("presence server", .ok, "reachable, \(Self.format(roundTrip)) round trip (connected in \(Self.format(asked - started)))")
            report.add("domain CA", .ok, pinned == nil ? "\(authority.fingerprint) (pinned now: first contact)" : "\(authority.fingerprint), as pinned")
            await checkClock(on: connection, roundTrip: roundTrip)
            if let seen = try? await withDeadline({ try await connection.call(WhoAmI.self, AMPEmpty()).address }) {
                report.publicTCPAddress = seen.host
                report.add("public address", .info, "\(seen.host) (the server sees your TCP connection from \(seen))")
            }
            try await withDeadline { [client, identity] in
                try await client.secure(connection, domain: domain, authority: authority, as: identity)
            }
            await checkReachability(on: connection)
        } catch let error as Q2QPinError {
            report.serverReachable = true
            report.add("domain CA", .problem, error.description, advice: "if the domain really changed its CA: vertex pins remove \(domain)")
        } catch where !report.serverReachable {
            report.add("presence server", .problem, "\(choice.explanation) accepts connections but does not answer: \(Self.words(error))",
                       advice: "is it a Vertex presence server? vertex servers set \(domain) HOST:PORT changes it")
        } catch {
            report.add("presence server", .problem, "\(Self.words(error))",
                       advice: "if your certificate was revoked or expired: vertex register \(identity.address) again")
        }
    }

    private mutating func checkClock(on connection: AMPConnection, roundTrip: Duration) async {
        let sent = Date()
        guard let answer = try? await withDeadline({ try await connection.call(ServerTime.self, AMPEmpty()) }) else {
            report.add("clock", .info, "not checked (the server does not tell its time)")
            return
        }
        let received = Date()
        let midpoint = sent.timeIntervalSince1970 * 1000 + received.timeIntervalSince(sent) * 500
        let offset = Double(answer.milliseconds) - midpoint
        report.clockOffsetMilliseconds = (offset * 10).rounded() / 10
        let text = String(format: "%.0f ms %@ the server's", abs(offset), offset > 0 ? "behind" : "ahead of")
        if abs(offset) > 60_000 {
            report.add("clock", .warning, text, advice: "certificates are checked against clocks: set the time (NTP)")
        } else {
            report.add("clock", .ok, text)
        }
    }

    /// Whether the server can open a TCP connection to a port of ours (a listener's
    /// `tcp@` path), opened for the check and closed after it.
    private mutating func checkReachability(on connection: AMPConnection) async {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in channel.close() }
        // The server connects back to the address our connection comes from: over IPv6
        // when the connection is (a server given by name is reached over IPv6 first).
        let family = connection.localAddress.flatMap(AddressFamily.init) ?? .v4
        guard let acceptor = try? await bootstrap.bind(host: family.wildcard, port: 0).get(), let port = acceptor.localAddress?.port else { return }
        defer { acceptor.close(promise: nil) }
        do {
            let answer = try await withDeadline { try await connection.call(CheckReachable.self, .init(port: port)) }
            report.tcpReachable = answer.reachable
            if answer.reachable {
                report.add("tcp@ from the internet", .ok, "the server connected back to your port \(port): peers can use your tcp@ paths")
            } else {
                report.add("tcp@ from the internet", .info, "the server could not connect back to port \(port): \(answer.reason ?? "no reason")",
                           advice: "peers reach you by ptcp, rptcp or the relay instead (a forwarded or mapped port would allow tcp)")
            }
        } catch {
            report.add("tcp@ from the internet", .info, "not checked: \(Self.words(error))")
        }
    }

    // MARK: Identity

    private mutating func checkIdentity() {
        let notAfter = identity.certificate.notValidAfter
        let left = notAfter.timeIntervalSinceNow
        let until = ISO8601DateFormatter().string(from: notAfter)
        if left <= 0 {
            report.add("certificate", .problem, "expired \(until)", advice: "vertex register \(identity.address)")
        } else if left < 3 * 86_400 {
            report.add("certificate", .warning, "expires \(until) (in \(Int(left / 3600)) h)", advice: "vertex register \(identity.address) renews it")
        } else {
            report.add("certificate", .ok, "\(identity.address), serial \(identity.certificate.serial), valid until \(until) (\(Int(left / 86_400)) days)")
        }
    }

    // MARK: UDP and the NAT

    private mutating func checkNAT() {
        guard let nat = report.nat else {
            report.add("UDP", .warning, "not checked (the server's address does not resolve)")
            return
        }
        guard nat.udpWorks else {
            report.add("UDP", .problem, "no answer from the server's UDP port \(choice.server.port)",
                       advice: "UDP is blocked (a firewall?) or the server runs with --no-udp: peers reach you by tcp or the relay only")
            return
        }
        report.add("UDP", .ok, "the server answers; it sees you at \(nat.mappedAddress?.description ?? "?")")
        switch nat.mapping {
        case .none?:
            report.add("NAT", .ok, "none: your address is public")
        case .endpointIndependent?, .endpointIndependentOrAddressDependent?:
            report.add("NAT mapping", .ok, "\(nat.mapping!.rawValue) (\"cone\"): hole punching works with most peers")
        case .addressDependent?, .addressAndPortDependent?:
            report.add("NAT mapping", .warning, "\(nat.mapping!.rawValue) (\"symmetric\"): each destination gets a new public port",
                       advice: "peers behind NATs reach you through the relay; port mapping on your router (NAT-PMP/PCP), or a public address, goes direct")
        case nil:
            report.add("NAT mapping", .info, "unknown (the server has no second UDP port)")
        }
        if let filtering = nat.filtering, nat.mapping != Optional.none {
            report.add("NAT filtering", .info, "\(filtering.rawValue)")
        }
        if let preserved = nat.portPreserved, nat.mapping != Optional.none {
            report.add("port preserved", .info, preserved ? "yes" : "no")
        }
        if let hairpin = nat.hairpinning {
            report.add("hairpinning", .info, hairpin ? "yes: peers behind the same NAT reach your public address"
                                                     : "no: peers behind the same NAT reach you by your LAN address only")
        }
        if let outlived = nat.mappingOutlivedProbe, let probe = nat.mappingLifetimeProbe {
            report.add("mapping lifetime", outlived ? .ok : .warning,
                       outlived ? "at least \(Int(probe)) s idle (bounded probe)" : "under \(Int(probe)) s idle",
                       advice: outlived ? nil : "your NAT forgets idle UDP quickly: long-idle streams may break")
        }
        if let mapped = nat.mappedAddress, Self.isSharedOrPrivate(mapped.host) {
            report.add("carrier-grade NAT", .warning, "the server sees you at \(mapped.host), a shared or private address",
                       advice: "your ISP's NAT (100.64.0.0/10) or a server on your side of a NAT: peers elsewhere see another address")
        }
    }

    private mutating func checkIPv6() {
        guard let ipv6 = report.ipv6, !ipv6.addresses.isEmpty else {
            report.add("IPv6", .info, "no global IPv6 address on this host: direct paths depend on the IPv4 NAT")
            return
        }
        let addresses = ipv6.addresses.joined(separator: ", ")
        guard let serverAddress = ipv6.serverAddress else {
            report.add("IPv6", .warning, "global address(es) \(addresses), but the presence server's address \(choice.server.host) has no IPv6 one",
                       advice: "peers cannot punch to you over IPv6 without the server seeing your IPv6 address: give it by a name with an AAAA record, or by its IPv6 address (vertex servers set)")
            return
        }
        guard let seen = ipv6.seen else {
            report.add("IPv6", .warning, "global address(es) \(addresses), but the server's [\(serverAddress)]:\(choice.server.port) answers no UDP from here",
                       advice: "IPv6 UDP is blocked (a firewall?), or the server does not listen on IPv6: peers reach you over IPv4 only")
            return
        }
        report.add("IPv6", .ok, "global address(es) \(addresses); the server answers over IPv6 and sees you at \(seen): peers with IPv6 reach you directly, whatever the IPv4 NAT")
    }

    /// Which methods a peer of each kind can be expected to use towards our listeners.
    private mutating func expect() {
        guard report.serverReachable else { return }
        let nat = report.nat
        let udp = nat?.udpWorks == true
        let tcp = report.tcpReachable == true
        let mapped = report.portMapping != nil
        let punchable = nat?.punchable == true
        func methods(_ direct: [String]) -> [String] { direct.isEmpty ? ["relay"] : direct + ["relay as a fallback"] }
        var publicPeer: [String] = tcp || mapped ? ["tcp"] : []
        if udp { publicPeer.append(punchable || mapped ? "ptcp" : "rptcp") }
        var conePeer: [String] = tcp || mapped ? ["tcp"] : []
        if udp, punchable || mapped { conePeer.append("ptcp") }
        var symmetricPeer: [String] = tcp || mapped ? ["tcp"] : []
        if udp, nat?.mapping == Optional.none || mapped { symmetricPeer.append("rptcp") }
        report.expectations = [
            .init(peer: "a public peer", methods: methods(publicPeer)),
            .init(peer: "a peer behind a cone NAT", methods: methods(conePeer)),
            .init(peer: "a peer behind a symmetric NAT", methods: methods(symmetricPeer)),
        ]
        if report.ipv6?.seen != nil {
            report.expectations.append(.init(peer: "a peer with IPv6", methods: methods(["ptcp over IPv6"])))
        }
    }

    // MARK: Helpers

    private func withDeadline<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: Self.deadline)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw CLIError("no answer within \(Self.deadline)")
            }
            return value
        }
    }

    static func words(_ error: any Error) -> String {
        switch error {
        case let error as PresenceClientError: error.description
        case let error as CLIError: "\(error)"
        default: "\(error)"
        }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        (Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15).rounded(.toNearestOrEven)
    }

    static func format(_ duration: Duration) -> String { String(format: "%.0f ms", milliseconds(duration)) }

    static func isSharedOrPrivate(_ host: String) -> Bool {
        let octets = host.split(separator: ".").compactMap { Int($0) }
        guard octets.count == 4 else { return false }
        return octets[0] == 10 || (octets[0] == 100 && (64...127).contains(octets[1])) || (octets[0] == 172 && (16...31).contains(octets[1]))
            || (octets[0] == 192 && octets[1] == 168)
    }

}

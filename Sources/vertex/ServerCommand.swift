import ArgumentParser
import Foundation
import Logging
import PresenceHTTP
import PresencePostgres
import Prometheus
import Q2Q
import ServiceLifecycle

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run a domain's presence server.",
        discussion: """
            On first start the server creates each domain's CA (kept in --data) and prints \
            its fingerprint; give it to your users for 'vertex register \
            --domain-fingerprint'. Accounts are created with 'vertex user add'. Stops \
            cleanly on SIGINT or SIGTERM.

              vertex server --domain example.com --data /var/lib/vertex
            """
    )

    @Option(name: .customLong("domain"), help: ArgumentHelp("A domain this server is the presence server of (repeatable).", valueName: "domain"))
    var domains: [String]

    @Option(help: "The TCP port (the original's well-known port is 8788; 0 picks a free one).")
    var port: Int = 8788

    @Option(help: ArgumentHelp("An address to listen on (repeatable); default: every IPv4 and every IPv6 address (0.0.0.0 and ::, the latter skipped on a host without IPv6). Each family is its own socket: '--bind ::' alone serves IPv6 only.",
                               valueName: "address"))
    var bind: [String] = []

    @OptionGroup var data: DataOptions

    @Option(help: "Days a user certificate stays valid.")
    var certificateDays: Int = 30

    @Option(name: .customLong("peer-server"),
            help: ArgumentHelp("Where another domain's presence server is, DOMAIN=HOST:PORT (repeatable), when not at DOMAIN:8788.",
                               valueName: "domain=host:port"))
    var peerServers: [String] = []

    @Flag(help: "Let anyone create an account (add_user over TLS, rate-limited per source IP).")
    var openRegistration = false

    @Flag(help: "Do not answer address discovery on UDP (same port number as TCP); nodes behind NATs then use tcp and the relay only.")
    var noUdp = false

    @Option(help: ArgumentHelp("The second UDP port NAT behaviour tests (vertex doctor) are answered from; default: the TCP port + 1.",
                               valueName: "port"))
    var alternateUdpPort: Int?

    @Option(help: ArgumentHelp("A second address of this host, so that vertex doctor can tell how a NAT maps and filters towards another address (needs --bind with this host's first address).",
                               valueName: "address"))
    var alternateAddress: String?

    @Option(help: ArgumentHelp("Memory the relay may hold, in MiB: the flow-control windows of all relayed channels together (each takes up to 16 MiB); channels beyond it are refused.",
                               valueName: "MiB"))
    var relayBudget: Int = RelayLimits().budget >> 20

    @Option(help: ArgumentHelp("Serve Prometheus metrics (/metrics) and a status page (/) over HTTP on [HOST:]PORT; HOST defaults to 127.0.0.1 (the page has no login: expose it deliberately).",
                               valueName: "[host:]port"))
    var http: String?

    @Option(help: ArgumentHelp("This node's name among the domain's presence nodes sharing --database (default: HOST:PORT of its first address).",
                               valueName: "name"))
    var nodeName: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: Logger.Level = .info

    /// `--http` as an address: a port alone means loopback.
    var httpAddress: HostPort? {
        guard let http else { return nil }
        if let port = Int(http) { return HostPort(host: "127.0.0.1", port: port) }
        return HostPort(http)
    }

    func validate() throws {
        guard relayBudget >= 16, relayBudget <= 1 << 20 else { throw ValidationError("--relay-budget must be 16…1048576 MiB") }
        guard !domains.isEmpty else { throw ValidationError("give at least one --domain") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0…65535") }
        guard certificateDays > 0, certificateDays <= 3650 else { throw ValidationError("--certificate-days must be 1…3650") }
        if let alternateUdpPort, !(0...65535).contains(alternateUdpPort) { throw ValidationError("--alternate-udp-port must be 0…65535") }
        if let alternateAddress {
            guard HostPort.isIPAddress(alternateAddress) else { throw ValidationError("--alternate-address must be an IP address") }
            guard let first = bind.first, first != "0.0.0.0", first != "::", HostPort.isIPAddress(first) else {
                throw ValidationError("--alternate-address needs --bind with this host's first address (not every interface)")
            }
        }
        if http != nil {
            guard let address = httpAddress, HostPort.isIPAddress(address.host), (0...65535).contains(address.port) else {
                throw ValidationError("--http takes [HOST:]PORT with an IP address, e.g. 9788 or 127.0.0.1:9788")
            }
        }
        for address in bind where !HostPort.isIPAddress(address) {
            throw ValidationError("--bind takes an IPv4 or IPv6 address, not '\(address)'")
        }
    }

    func run() async throws {
        var peers: [String: HostPort] = [:]
        for entry in peerServers {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let domain = try? Q2QAddress(resource: nil, domain: parts[0]), let server = HostPort(parts[1]) else {
                throw ValidationError("--peer-server must be DOMAIN=HOST:PORT, got '\(entry)'")
            }
            peers[domain.domain] = server
        }
        var logger = Logger(label: "vertex.presence")
        logger.logLevel = logLevel
        raiseDescriptorLimit(logger: logger)
        let store = try await data.openStore(server: true, logger: logger)
        var configuration = PresenceServerConfiguration(
            domains: domains, port: port,
            certificateValidity: TimeInterval(certificateDays) * 86_400,
            openRegistration: openRegistration)
        if !bind.isEmpty { configuration.hosts = bind }
        configuration.peerServers = peers
        configuration.udpEnabled = !noUdp
        configuration.alternateUDPPort = alternateUdpPort
        configuration.alternateAddress = alternateAddress
        configuration.relayLimits.budget = relayBudget << 20
        if let nodeName { configuration.nodeName = nodeName }
        let observability = httpAddress.map { _ in PresenceHTTPServer.makeMetrics() }
        if let observability { configuration.metrics = observability.metrics }
        let server: PresenceServer
        do {
            server = try await PresenceServer.start(configuration: configuration, store: store, logger: logger)
        } catch let error as PresenceServerError {
            throw CLIError(error.description)
        } catch {
            throw CLIError("cannot start the presence server on \(configuration.hosts.joined(separator: ", ")) port \(port): \(error)")
        }
        let listening = server.localAddresses.compactMap { HostPort($0)?.description }.joined(separator: " and ")
        for domain in configuration.domains.map({ $0.lowercased() }) {
            print("vertex presence server for \(domain) listening on \(listening), CA \(server.authority(for: domain)!.certificate.fingerprint)")
        }
        let udpAddresses = server.udpAddresses.compactMap { HostPort($0)?.description }.sorted()
        let udp = udpAddresses.isEmpty ? "no UDP" : "address discovery on UDP \(udpAddresses.joined(separator: ", "))"
        print("data in \(data.directory.path)\(openRegistration ? ", open registration on" : ""), \(udp)")
        fflush(nil)
        // Nodes sharing a database know each other: heartbeats in it.
        var membership: PresenceMembership?
        if let shared = store as? PostgresPresenceStore, let first = server.localAddresses.compactMap({ HostPort($0) }).first {
            membership = PresenceMembership(store: shared, name: nodeName ?? first.description, address: first.description)
        }
        var http: PresenceService.HTTP?
        if let address = httpAddress, let observability {
            http = PresenceService.HTTP(host: address.host, port: address.port, registry: observability.registry)
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: PresenceService(server: server, http: http, membership: membership, logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        print("presence server stopped")
    }
}

/// Runs until graceful shutdown, then stops listening; with `http`, serves the metrics
/// and the status page meanwhile.
struct PresenceService: Service {
    struct HTTP {
        var host: String
        var port: Int
        var registry: PrometheusCollectorRegistry
    }

    let server: PresenceServer
    let http: HTTP?
    let membership: PresenceMembership?
    let logger: Logger

    func run() async throws {
        let beating = membership.map { membership in
            Task { [server] in await membership.run { server.setPeers($0) } }
        }
        let serving = http.map { http in
            Task { [server, logger] in
                do {
                    try await PresenceHTTPServer.run(server, registry: http.registry, host: http.host, port: http.port, logger: logger) { port in
                        let shown = http.host.contains(":") ? "[\(http.host)]" : http.host
                        print("metrics and status page on http://\(shown):\(port)/")
                        fflush(nil)
                    }
                } catch {
                    logger.error("the status page's HTTP server stopped: \(error)")
                }
            }
        }
        try? await gracefulShutdown()
        serving?.cancel()
        beating?.cancel()
        await serving?.value
        await beating?.value
        await server.close()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Raises the soft limit on open descriptors to the hard one: every connection is one,
/// and a server on the internet holds many (a distribution's default soft limit is 1,024).
func raiseDescriptorLimit(logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    let before = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
        logger.info("raised the open-descriptor limit", metadata: ["from": "\(before)", "to": "\(limit.rlim_max)"])
    }
}

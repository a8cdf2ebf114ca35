import AMP
import NIOCore

extension Q2QNode {
    /// Maps the listener's UDP port (its `ptcp@` paths) and TCP port (its `tcp@` path)
    /// on the home gateway, in the background: offers carry each mapped address as soon
    /// as the gateway grants it, and the registration is sent again when the TCP one
    /// changes, so that callers starting early try it too.
    func startPortMapping(for listener: Q2QListener, reachingServerFrom local: SocketAddress?) {
        guard let mapper = portMapper else { return }
        // Over loopback no peer beyond a gateway can use a mapping, and tests on a
        // developer's machine must never ask its real router (a named gateway is asked).
        if !mapper.gatewayIsConfigured {
            guard !Self.isLoopback(configuration.listenHost), let local, !Self.isLoopback(local.ipAddress ?? "") else { return }
        }
        var ports: [(PortMappingProtocol, Int)] = []
        if let udp = listener.udpPort { ports.append((.udp, udp.localPort)) }
        if let tcp = listener.port { ports.append((.tcp, tcp)) }
        let mappings = ports.map { proto, port in
            MaintainedPortMapping(proto, internalPort: port, mapper: mapper, lifetime: configuration.portMappingLifetime,
                                  refresh: configuration.portMappingRefresh, logger: logger) { [weak self, weak listener] mapping in
                guard let self, let listener else { return }
                listener.setPortMapped(proto, mapping?.external)
                if proto == .tcp { Task { await self.announce(listener) } }
            }
        }
        listener.attach(portMappings: mappings)
    }

    /// Sends the listener's registration again now (as a renewal would), with its
    /// current `tcp@` paths.
    func announce(_ listener: Q2QListener) async {
        guard !listener.isClosed, let connection = try? await link(as: listener.identity, to: listener.address.domain) else { return }
        _ = try? await withTimeout(.seconds(10), "announcing a listener's paths") {
            try await connection.call(Listen.self, self.listenArguments(for: listener, on: connection))
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

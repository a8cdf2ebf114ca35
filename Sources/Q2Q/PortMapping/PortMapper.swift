import Logging
import NIOCore

/// Asks the home gateway for port mappings: PCP (RFC 6887) first, NAT-PMP (RFC 6886)
/// when the gateway answers PCP with "unsupported version" or not at all (RFC 6887
/// §9), remembering which it speaks. A mapped port is reachable unsolicited from
/// anywhere and keeps one public address for every destination, even behind a NAT
/// that maps every destination anew, so peers can reach it directly.
///
/// Requests are retransmitted as NAT-PMP says (250 ms, doubling) but only a few times:
/// mapping runs beside listening, and a gateway that does not answer must cost
/// nothing but a few datagrams.
actor PortMapper {
    /// What a gateway granted.
    struct Mapping: Equatable, Sendable {
        /// The public address and port peers reach the internal port on.
        var external: HostPort
        /// How long the gateway keeps it without a renewal.
        var lifetime: Duration
        /// "PCP" or "NAT-PMP".
        var protocolName: String
    }

    private enum Dialect { case pcp, natPMP }

    private let gatewayOverride: HostPort?
    private let group: any EventLoopGroup
    private let logger: Logger
    /// Each attempt's wait for an answer; the sum bounds one request.
    let answerTimeouts: [Duration]
    private var dialect: Dialect?
    /// NAT-PMP's epoch in its last answer: a smaller one means the gateway restarted
    /// and forgot its mappings (RFC 6886 §3.6); the next renewal makes them again.
    private var epoch: UInt32?

    /// `gateway` replaces the default route's gateway (and its port 5351).
    init(gateway: HostPort? = nil, answerTimeouts: [Duration] = [.milliseconds(250), .milliseconds(500), .milliseconds(1000)],
         group: any EventLoopGroup, logger: Logger) {
        self.gatewayOverride = gateway
        self.answerTimeouts = answerTimeouts
        self.group = group
        self.logger = logger
    }

    /// Whether the gateway was named rather than found from the routing table.
    nonisolated var gatewayIsConfigured: Bool { gatewayOverride != nil }

    /// The gateway's port-mapping address.
    func gateway() throws(PortMappingError) -> SocketAddress {
        let address = gatewayOverride ?? DefaultGateway.ipv4().map { HostPort(host: $0, port: NATPMPMessage.serverPort) }
        guard let address, let socket = try? address.peerSocketAddress() else { throw .noGateway }
        return socket
    }

    /// Maps `internalPort` for `lifetime` (the gateway may grant less), or renews the
    /// mapping made with the same `nonce` (PCP's; NAT-PMP knows a mapping by its port).
    func map(_ proto: PortMappingProtocol, internalPort: Int, lifetime: Duration, nonce: [UInt8]) async throws -> Mapping {
        let gateway = try gateway()
        let socket = try await GatewaySocket.open(to: gateway, group: group)
        defer { socket.close() }
        let seconds = UInt32(clamping: lifetime.components.seconds)
        if dialect != .natPMP {
            // Two tries only: a gateway that speaks neither stays silent for both.
            let tries = dialect == .pcp ? answerTimeouts : Array(answerTimeouts.prefix(2))
            switch try await mapByPCP(proto, internalPort: internalPort, lifetime: seconds, nonce: nonce, on: socket, tries: tries) {
            case .mapped(let mapping):
                dialect = .pcp
                return mapping
            case .unsupportedVersion:
                logger.debug("the gateway does not speak PCP; using NAT-PMP", metadata: ["gateway": "\(Self.describe(gateway))"])
            case .silent:
                if dialect == .pcp { throw PortMappingError.noAnswer(gateway: Self.describe(gateway)) }
            }
        }
        let mapping = try await mapByNATPMP(proto, internalPort: internalPort, lifetime: seconds, on: socket, gateway: gateway)
        dialect = .natPMP
        return mapping
    }

    /// Deletes the mapping of `internalPort` (one short try: this runs as the node stops).
    func unmap(_ proto: PortMappingProtocol, internalPort: Int, nonce: [UInt8]) async {
        guard let dialect, let gateway = try? gateway(), let socket = try? await GatewaySocket.open(to: gateway, group: group) else { return }
        defer { socket.close() }
        let port = UInt16(clamping: internalPort)
        let timeouts = [Duration.milliseconds(250), .milliseconds(250)]
        switch dialect {
        case .pcp:
            guard let client = Self.ipv4Bytes(of: socket.localAddress) else { return }
            let request = PCPMapMessage(isAnswer: false, lifetime: 0, clientAddress: PCPMapMessage.mapped(ipv4: client), nonce: nonce,
                                        proto: proto, internalPort: port, externalPort: 0)
            _ = try? await socket.exchange(request.bytes, timeouts: timeouts) { bytes in
                (try? PCPMapMessage(decoding: bytes)).flatMap { $0.isAnswer && $0.nonce == nonce ? () : nil }
            }
        case .natPMP:
            let request = NATPMPMessage.mapRequest(proto, internalPort: port, suggestedExternalPort: 0, lifetime: 0)
            _ = try? await socket.exchange(request.bytes, timeouts: timeouts) { bytes in
                switch try? NATPMPMessage(decoding: bytes) {
                case .mapAnswer(proto, _, port, _, _)?, .failure(proto.natPMPOpcode, _, _)?: ()
                default: nil
                }
            }
        }
    }

    // MARK: PCP

    private enum PCPOutcome {
        case mapped(Mapping)
        case unsupportedVersion
        case silent
    }

    private func mapByPCP(_ proto: PortMappingProtocol, internalPort: Int, lifetime: UInt32, nonce: [UInt8],
                          on socket: GatewaySocket, tries: [Duration]) async throws -> PCPOutcome {
        // PCP names the client's own address, as the gateway must see it; IPv4 here.
        guard let client = Self.ipv4Bytes(of: socket.localAddress) else { return .silent }
        let port = UInt16(clamping: internalPort)
        let request = PCPMapMessage(isAnswer: false, lifetime: lifetime, clientAddress: PCPMapMessage.mapped(ipv4: client), nonce: nonce,
                                    proto: proto, internalPort: port, externalPort: port)
        enum Answer { case pcp(PCPMapMessage), natPMPUnsupportedVersion }
        let answer = try await socket.exchange(request.bytes, timeouts: tries) { bytes -> Answer? in
            // A NAT-PMP gateway answers a version it does not know in its own format.
            if bytes.first == NATPMPMessage.version {
                if case .failure(_, .unsupportedVersion, _)? = try? NATPMPMessage(decoding: bytes) { return .natPMPUnsupportedVersion }
                ignore(bytes, "not an answer to PCP")
                return nil
            }
            do {
                let message = try PCPMapMessage(decoding: bytes)
                // An error answer without the MAP payload cannot name the nonce.
                guard message.isAnswer, message.nonce == nonce || message.result != .success else {
                    ignore(bytes, "a PCP message that does not answer ours")
                    return nil
                }
                return .pcp(message)
            } catch {
                ignore(bytes, "\(error)")
                return nil
            }
        }
        switch answer {
        case nil:
            return .silent
        case .natPMPUnsupportedVersion:
            return .unsupportedVersion
        case .pcp(let message) where message.result == .unsupportedVersion:
            return .unsupportedVersion
        case .pcp(let message):
            guard message.result == .success else { throw PortMappingError.refused(protocolName: "PCP", result: "\(message.result)") }
            guard let external = PCPMapMessage.ipv4(inside: message.externalAddress), message.externalPort != 0 else {
                throw PortMappingError.malformed("a PCP mapping without an IPv4 address and port")
            }
            return .mapped(Mapping(external: HostPort(host: Self.dotted(external), port: Int(message.externalPort)),
                                   lifetime: .seconds(message.lifetime), protocolName: "PCP"))
        }
    }

    // MARK: NAT-PMP

    /// The public address (asked each time: that is how a changed one is noticed),
    /// then the mapping.
    private func mapByNATPMP(_ proto: PortMappingProtocol, internalPort: Int, lifetime: UInt32, on socket: GatewaySocket,
                             gateway: SocketAddress) async throws -> Mapping {
        let address = try await natPMPExchange(.publicAddressRequest, on: socket, gateway: gateway) { message -> [UInt8]? in
            if case .publicAddressAnswer(_, let address) = message { return address }
            return nil
        }
        let port = UInt16(clamping: internalPort)
        let request = NATPMPMessage.mapRequest(proto, internalPort: port, suggestedExternalPort: port, lifetime: lifetime)
        let (external, granted) = try await natPMPExchange(request, on: socket, gateway: gateway) { message -> (UInt16, UInt32)? in
            if case .mapAnswer(proto, _, port, let external, let granted) = message { return (external, granted) }
            return nil
        }
        guard external != 0, address != [0, 0, 0, 0] else {
            throw PortMappingError.malformed("a NAT-PMP mapping to port \(external) of \(Self.dotted(address))")
        }
        return Mapping(external: HostPort(host: Self.dotted(address), port: Int(external)), lifetime: .seconds(granted), protocolName: "NAT-PMP")
    }

    /// One NAT-PMP request; its answer as `accept` reads it, or the gateway's refusal.
    private func natPMPExchange<T>(_ request: NATPMPMessage, on socket: GatewaySocket, gateway: SocketAddress,
                                   accept: (NATPMPMessage) -> T?) async throws -> T {
        let opcode = request.bytes[1]
        var epochs: [UInt32] = []
        let answer = try await socket.exchange(request.bytes, timeouts: answerTimeouts) { bytes -> NATPMPAnswer<T>? in
            do {
                let message = try NATPMPMessage(decoding: bytes)
                switch message {
                case .failure(opcode, let result, let epoch):
                    epochs.append(epoch)
                    return .refused(result)
                case .publicAddressAnswer(let epoch, _), .mapAnswer(_, let epoch, _, _, _):
                    guard let value = accept(message) else { break }
                    epochs.append(epoch)
                    return .value(value)
                default:
                    break
                }
                ignore(bytes, "a NAT-PMP message that does not answer ours")
            } catch {
                ignore(bytes, "\(error)")
            }
            return nil
        }
        if let latest = epochs.last {
            if let epoch, latest < epoch {
                logger.info("the gateway restarted (its NAT-PMP epoch went back); mapping again", metadata: ["gateway": "\(Self.describe(gateway))"])
            }
            epoch = latest
        }
        switch answer {
        case .value(let value)?: return value
        case .refused(let result)?: throw PortMappingError.refused(protocolName: "NAT-PMP", result: "\(result)")
        case nil: throw PortMappingError.noAnswer(gateway: Self.describe(gateway))
        }
    }

    private enum NATPMPAnswer<T> { case value(T), refused(NATPMPResult) }

    // MARK: Helpers

    private nonisolated func ignore(_ bytes: [UInt8], _ reason: String) {
        logger.notice("ignored a datagram from the gateway", metadata: ["bytes": "\(bytes.count)", "why": "\(reason)"])
    }

    private static func ipv4Bytes(of address: SocketAddress?) -> [UInt8]? {
        guard case .v4(let v4)? = address else { return nil }
        return withUnsafeBytes(of: v4.address.sin_addr.s_addr) { Array($0) }
    }

    static func describe(_ gateway: SocketAddress) -> String { HostPort(gateway)?.description ?? "\(gateway)" }

    private static func dotted(_ bytes: [UInt8]) -> String { bytes.map(String.init).joined(separator: ".") }
}

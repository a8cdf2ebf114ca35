import Foundation
import Locking
import Logging
import NIOCore
import NIOPosix
@testable import Q2Q
import Testing
import VertexTestSupport

/// Port mapping: the NAT-PMP and PCP codecs, and the client against a gateway on
/// loopback that answers as a script says (a NAT-PMP-only router, a PCP router, one
/// that answers garbage, one that is silent). Real routers' behaviour, with iptables
/// doing the mapping, is in NetlabTests (netlab's NAT-PMP gateway).
@Suite("Port mapping: NAT-PMP and PCP")
struct PortMappingTests {
    // MARK: Codecs

    @Test("NAT-PMP messages have RFC 6886's layout, and what decodes re-encodes to itself")
    func natPMPLayout() throws {
        #expect(NATPMPMessage.publicAddressRequest.bytes == [0, 0])
        #expect(NATPMPMessage.mapRequest(.udp, internalPort: 0x1234, suggestedExternalPort: 0x5678, lifetime: 7200).bytes
            == [0, 1, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x1c, 0x20])
        #expect(NATPMPMessage.mapRequest(.tcp, internalPort: 1, suggestedExternalPort: 0, lifetime: 0).bytes[1] == 2)
        // netlab's gateway: struct.pack("!BBHI4s", 0, 128, 0, epoch, inet_aton(public))
        #expect(try NATPMPMessage(decoding: [0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 10])
            == .publicAddressAnswer(epoch: 9, address: [203, 0, 113, 10]))
        // ... and its answer to a PCP request: struct.pack("!BBHI", 0, 128 + 1, 1, epoch)
        #expect(try NATPMPMessage(decoding: [0, 129, 0, 1, 0, 0, 0, 3]) == .failure(opcode: 1, result: .unsupportedVersion, epoch: 3))
        #expect(try NATPMPMessage(decoding: [0, 130, 0, 0, 0, 0, 0, 3, 0x1f, 0x90, 0x1f, 0x91, 0, 0, 0, 60])
            == .mapAnswer(.tcp, epoch: 3, internalPort: 8080, externalPort: 8081, lifetime: 60))
        for bad: [UInt8] in [[], [0], [1, 0], [0, 0, 0], [0, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3], [0, 129, 0, 0, 0, 0, 0, 0], [0, 7],
                             [UInt8](repeating: 0, count: 17)] {
            #expect(throws: PortMappingError.self, "\(bad)") { try NATPMPMessage(decoding: bad) }
        }
    }

    @Test("PCP MAP messages have RFC 6887's layout, and what decodes re-encodes to itself")
    func pcpLayout() throws {
        let nonce: [UInt8] = Array(1...12)
        let request = PCPMapMessage(isAnswer: false, lifetime: 7200, clientAddress: PCPMapMessage.mapped(ipv4: [10, 0, 1, 2]), nonce: nonce,
                                    proto: .udp, internalPort: 41000, externalPort: 41000)
        let bytes = request.bytes
        #expect(bytes.count == 60)
        #expect(Array(bytes[0..<8]) == [2, 1, 0, 0, 0, 0, 0x1c, 0x20])
        #expect(Array(bytes[8..<24]) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 2])
        #expect(Array(bytes[24..<36]) == nonce)
        #expect(Array(bytes[36..<40]) == [17, 0, 0, 0])
        #expect(Array(bytes[40..<44]) == [0xa0, 0x28, 0xa0, 0x28])
        #expect(try PCPMapMessage(decoding: bytes) == request)

        var answer = PCPMapMessage(isAnswer: true, lifetime: 3600, epoch: 77, nonce: nonce, proto: .tcp, internalPort: 22, externalPort: 2222,
                                   externalAddress: PCPMapMessage.mapped(ipv4: [203, 0, 113, 10]))
        #expect(Array(answer.bytes[0..<4]) == [2, 0x81, 0, 0])
        #expect(try PCPMapMessage(decoding: answer.bytes) == answer)
        #expect(PCPMapMessage.ipv4(inside: answer.externalAddress) == [203, 0, 113, 10])
        // Options after the payload are skipped; an error answer may come without payload.
        #expect(try PCPMapMessage(decoding: answer.bytes + [0x80, 0, 0, 0]) == answer)
        answer.result = .notAuthorized
        #expect(try PCPMapMessage(decoding: Array(answer.bytes[0..<24])).result == .notAuthorized)
        for bad: [UInt8] in [[], [2, 0x81, 0, 0], Array(answer.bytes[0..<24]).map { $0 == 2 ? 2 : $0 } + [0, 0, 0],
                             [2, 0x82] + [UInt8](repeating: 0, count: 58), [3, 0x81] + [UInt8](repeating: 0, count: 58),
                             [UInt8](repeating: 0, count: 1104)] {
            #expect(throws: PortMappingError.self, "\(bad.prefix(8))") { try PCPMapMessage(decoding: bad) }
        }
        // A successful MAP answer must carry the payload.
        var cut = Array(PCPMapMessage(isAnswer: true, lifetime: 1, nonce: nonce, proto: .udp, internalPort: 1, externalPort: 1).bytes[0..<24])
        cut[3] = 0
        #expect(throws: PortMappingError.self) { try PCPMapMessage(decoding: cut) }
    }

    @Test("decoders take any datagram without crashing, within their size limits, and a decoded message round-trips")
    func decodersAreTotal() throws {
        var random = SplitMix64(seed: 0x5EED_0000_0000_0023)
        let nonce = [UInt8](repeating: 7, count: 12)
        let valid: [[UInt8]] = [
            NATPMPMessage.publicAddressRequest.bytes,
            NATPMPMessage.mapRequest(.udp, internalPort: 5000, suggestedExternalPort: 5000, lifetime: 60).bytes,
            NATPMPMessage.publicAddressAnswer(epoch: 1, address: [1, 2, 3, 4]).bytes,
            NATPMPMessage.mapAnswer(.tcp, epoch: 1, internalPort: 1, externalPort: 2, lifetime: 3).bytes,
            PCPMapMessage(isAnswer: true, lifetime: 60, epoch: 5, nonce: nonce, proto: .udp, internalPort: 9, externalPort: 10,
                          externalAddress: PCPMapMessage.mapped(ipv4: [9, 9, 9, 9])).bytes,
            PCPMapMessage(isAnswer: false, lifetime: 60, nonce: nonce, proto: .tcp, internalPort: 9, externalPort: 10).bytes,
        ]
        var decoded = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = valid[Int(random.next() % UInt64(valid.count))]
                for _ in 0...(random.next() % 3) where !bytes.isEmpty {
                    switch random.next() % 3 {
                    case 0: bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
                    case 1: bytes.removeLast(Int(random.next() % UInt64(bytes.count)))
                    default: bytes += (0..<(random.next() % 8)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                    }
                }
            } else {
                bytes = (0..<(random.next() % 80)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                if !bytes.isEmpty { bytes[0] = [0, 2, UInt8(truncatingIfNeeded: random.next())][Int(random.next() % 3)] }
            }
            if let message = try? NATPMPMessage(decoding: bytes) {
                decoded += 1
                #expect(bytes.count <= NATPMPMessage.maximumSize)
                #expect(try NATPMPMessage(decoding: message.bytes) == message, "\(bytes)")
            }
            if let message = try? PCPMapMessage(decoding: bytes) {
                decoded += 1
                #expect(bytes.count <= PCPMapMessage.maximumSize)
                #expect(try PCPMapMessage(decoding: message.bytes) == message, "\(bytes)")
            }
        }
        #expect(decoded > 1_000)
    }

    @Test("the default gateway comes from /proc/net/route's first up default route with a gateway")
    func defaultGateway() {
        let table = """
            Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
            eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
            eth1\t00000000\t0101000A\t0001\t0\t0\t0\t00000000\t0\t0\t0
            eth0\t00000000\t0101000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
            """
        #expect(DefaultGateway.parse(procNetRoute: table) == "10.0.1.1")
        #expect(DefaultGateway.parse(procNetRoute: "Iface\tDestination\tGateway\n") == nil)
        #expect(DefaultGateway.parse(procNetRoute: "header\neth0\t00000000\tzz\t0003\n") == nil)
    }

    // MARK: The client against scripted gateways

    @Test("a NAT-PMP-only gateway answers PCP with 'unsupported version': the client falls back and maps, and deletes on close")
    func fallsBackToNATPMP() async throws {
        try await ScriptedGateway.with(.natPMP(publicAddress: [203, 0, 113, 7])) { gateway in
            let mapper = PortMapper(gateway: gateway.address, group: .singletonMultiThreadedEventLoopGroup, logger: Self.logger)
            let nonce = [UInt8](repeating: 1, count: 12)
            let mapping = try await mapper.map(.udp, internalPort: 41000, lifetime: .seconds(120), nonce: nonce)
            #expect(mapping == PortMapper.Mapping(external: HostPort(host: "203.0.113.7", port: 41000), lifetime: .seconds(120), protocolName: "NAT-PMP"))
            // (Counts are not checked: on a loaded machine an answer can be late enough
            // for a retransmission.)
            let first = gateway.requests
            #expect(first.first?.first == PCPMapMessage.version && first.first?.count == 60, "PCP is tried first")
            let natPMP = first.filter { $0.first == NATPMPMessage.version }.map { Array($0.prefix(2)) }
            #expect(natPMP.first == [0, 0] && natPMP.last == [0, 1], "then the public address and the mapping by NAT-PMP: \(natPMP)")
            // Renewing speaks NAT-PMP at once; deleting asks for lifetime 0.
            _ = try await mapper.map(.udp, internalPort: 41000, lifetime: .seconds(120), nonce: nonce)
            let renewal = gateway.requests.dropFirst(first.count)
            #expect(renewal.allSatisfy { $0.first == NATPMPMessage.version }, "no PCP once the gateway is known to speak NAT-PMP")
            #expect(renewal.contains { $0.prefix(2) == [0, 0] } && renewal.contains { $0.prefix(2) == [0, 1] })
            await mapper.unmap(.udp, internalPort: 41000, nonce: nonce)
            #expect(try NATPMPMessage(decoding: gateway.requests.last!) == .mapRequest(.udp, internalPort: 41000, suggestedExternalPort: 0, lifetime: 0))
            #expect(gateway.mappings.isEmpty)
        }
    }

    @Test("a PCP gateway maps with PCP; renewals and the deletion repeat the mapping's nonce")
    func mapsByPCP() async throws {
        try await ScriptedGateway.with(.pcp(publicAddress: [198, 51, 100, 20], externalPort: 50_001)) { gateway in
            let mapper = PortMapper(gateway: gateway.address, group: .singletonMultiThreadedEventLoopGroup, logger: Self.logger)
            let nonce: [UInt8] = Array(20..<32)
            let mapping = try await mapper.map(.tcp, internalPort: 8080, lifetime: .seconds(600), nonce: nonce)
            #expect(mapping == PortMapper.Mapping(external: HostPort(host: "198.51.100.20", port: 50_001), lifetime: .seconds(600), protocolName: "PCP"))
            _ = try await mapper.map(.tcp, internalPort: 8080, lifetime: .seconds(600), nonce: nonce)
            await mapper.unmap(.tcp, internalPort: 8080, nonce: nonce)
            let requests = try gateway.requests.map { try PCPMapMessage(decoding: $0) }
            #expect(requests.allSatisfy { $0.nonce == nonce && $0.proto == .tcp && $0.internalPort == 8080 && !$0.isAnswer })
            // Two maps (each possibly sent again on a loaded machine), then the deletion.
            #expect(requests.first?.lifetime == 600 && requests.last?.lifetime == 0 && requests.filter { $0.lifetime == 600 }.count >= 2,
                    "\(requests.map(\.lifetime))")
            #expect(PCPMapMessage.ipv4(inside: requests[0].clientAddress) == [127, 0, 0, 1], "the client names the address it sends from")
        }
    }

    @Test("garbage and answers of the wrong size from the gateway are ignored: the answer after them is used")
    func ignoresGarbage() async throws {
        try await ScriptedGateway.with(.garbageThen(.natPMP(publicAddress: [192, 0, 2, 1]))) { gateway in
            let mapper = PortMapper(gateway: gateway.address, group: .singletonMultiThreadedEventLoopGroup, logger: Self.logger)
            let mapping = try await mapper.map(.udp, internalPort: 40_000, lifetime: .seconds(60), nonce: [UInt8](repeating: 0, count: 12))
            #expect(mapping.external == HostPort(host: "192.0.2.1", port: 40_000))
            #expect(gateway.garbageSent > 10)
        }
    }

    @Test("a gateway that only answers garbage, or nothing, costs a bounded wait and a clear error")
    func silentOrGarbageGateway() async throws {
        for script in [ScriptedGateway.Script.garbageOnly, .silent] {
            try await ScriptedGateway.with(script) { gateway in
                let mapper = PortMapper(gateway: gateway.address, answerTimeouts: [.milliseconds(50), .milliseconds(100)],
                                        group: .singletonMultiThreadedEventLoopGroup, logger: Self.logger)
                let expected = PortMappingError.noAnswer(gateway: gateway.address.description)
                let started = ContinuousClock.now
                await #expect(throws: expected) {
                    try await mapper.map(.udp, internalPort: 40_000, lifetime: .seconds(60), nonce: [UInt8](repeating: 0, count: 12))
                }
                // Bounded: PCP's two tries, then NAT-PMP's public-address request with
                // its two (the mapping is never asked without an address): 300 ms of
                // waiting in all; the time bound only catches a wait without end.
                // (The last datagram may still be on its way to the gateway's loop.)
                for _ in 0..<50 where gateway.requests.count < 4 { try await Task.sleep(for: .milliseconds(100)) }
                try await Task.sleep(for: .milliseconds(300))
                #expect(gateway.requests.map(\.count) == [60, 60, 2, 2], "\(script)")
                #expect(ContinuousClock.now - started < .seconds(30))
            }
        }
    }

    @Test("a refusal is a typed error naming the result")
    func refusal() async throws {
        try await ScriptedGateway.with(.natPMPRefusing(.notAuthorized)) { gateway in
            let mapper = PortMapper(gateway: gateway.address, group: .singletonMultiThreadedEventLoopGroup, logger: Self.logger)
            await #expect(throws: PortMappingError.refused(protocolName: "NAT-PMP", result: "\(NATPMPResult.notAuthorized)")) {
                try await mapper.map(.udp, internalPort: 40_000, lifetime: .seconds(60), nonce: [UInt8](repeating: 0, count: 12))
            }
        }
    }

    @Test("a listener offers the gateway's mappings of its UDP and TCP ports, renews them, and deletes them when it closes")
    func listenerOffersMappings() async throws {
        try await ScriptedGateway.with(.natPMP(publicAddress: [203, 0, 113, 99])) { gateway in
            try await withDomain { domain in
                var configuration = Q2QNodeConfiguration(listenHost: "127.0.0.1")
                configuration.portMappingGateway = gateway.address
                configuration.portMappingLifetime = .seconds(2)
                let bob = try await makeNode("bob@\(domain.name)", in: domain, configuration: configuration)
                let listener = try await bob.listen(as: try Q2QAddress("bob@\(domain.name)"), service: "echo")
                let tcp = try #require(listener.port)
                let udp = try #require(listener.udpPort?.localPort)
                var offer: ListenerOffer?
                for _ in 0..<100 {
                    offer = listener.offer(for: try Q2QAddress("alice@\(domain.name)"), publishing: ["127.0.0.1"], udpSource: nil)
                    if offer?.methods.contains(.ptcp(HostPort(host: "203.0.113.99", port: udp))) == true,
                       offer?.methods.contains(.tcp(HostPort(host: "203.0.113.99", port: tcp))) == true { break }
                    try await Task.sleep(for: .milliseconds(50))
                }
                let methods = try #require(offer?.methods)
                #expect(methods.contains(.tcp(HostPort(host: "127.0.0.1", port: tcp))))
                #expect(methods.contains(.tcp(HostPort(host: "203.0.113.99", port: tcp))), "\(methods)")
                #expect(methods.contains(.ptcp(HostPort(host: "203.0.113.99", port: udp))), "\(methods)")
                #expect(!listener.mappingLooksSymmetric)
                // A lifetime of 2 s is renewed each second (3.5 s: room for a loaded machine).
                try await Task.sleep(for: .milliseconds(3_500))
                let renewals = gateway.requests.filter { $0.count == 12 && $0[1] == 1 }.count
                #expect(renewals >= 2, "UDP map requests: \(renewals)")
                #expect(gateway.mappings.count == 2)
                await listener.close()
                #expect(gateway.mappings.isEmpty, "mappings left: \(gateway.mappings)")
                await bob.shutdown()
            }
        }
    }

    @Test("a mapping kept open notices when the gateway's public address changes, and is deleted on close")
    func noticesNewPublicAddress() async throws {
        try await ScriptedGateway.with(.natPMP(publicAddress: [203, 0, 113, 1])) { gateway in
            let mapper = PortMapper(gateway: gateway.address, group: .singletonMultiThreadedEventLoopGroup, logger: Self.logger)
            let (changes, continuation) = AsyncStream.makeStream(of: HostPort?.self)
            let mapping = MaintainedPortMapping(.udp, internalPort: 45_000, mapper: mapper, lifetime: .seconds(3600), refresh: .milliseconds(200),
                                                logger: Self.logger) { continuation.yield($0?.external) }
            var seen = changes.makeAsyncIterator()
            #expect(await seen.next() == HostPort(host: "203.0.113.1", port: 45_000))
            gateway.setPublicAddress([203, 0, 113, 2])
            #expect(await seen.next() == HostPort(host: "203.0.113.2", port: 45_000))
            #expect(mapping.current?.external == HostPort(host: "203.0.113.2", port: 45_000))
            await mapping.close()
            #expect(gateway.mappings.isEmpty)
        }
    }

    @Test("over loopback a node asks no gateway unless one is named")
    func loopbackAsksNoGateway() async throws {
        try await withDomain { domain in
            let bob = try await makeNode("bob@\(domain.name)", in: domain, configuration: .init(listenHost: "0.0.0.0"))
            let listener = try await bob.listen(as: try Q2QAddress("bob@\(domain.name)"), service: "echo")
            #expect(listener.portMappingCount == 0)
            await listener.close()
            await bob.shutdown()
        }
    }

    static let logger = Logger(label: "test.portmap")
}

/// A port-mapping gateway on loopback that answers as its script says, keeping every
/// request it got (and, for NAT-PMP, the mappings it holds).
final class ScriptedGateway: Sendable {
    indirect enum Script: Sendable {
        /// NAT-PMP only (PCP gets netlab's 8-byte "unsupported version").
        case natPMP(publicAddress: [UInt8])
        case pcp(publicAddress: [UInt8], externalPort: UInt16)
        case natPMPRefusing(NATPMPResult)
        /// Before each answer of `then`, a dozen datagrams of garbage and wrong sizes.
        case garbageThen(Script)
        case garbageOnly
        case silent
    }

    private let channel: any Channel
    private let answerer: Answerer

    struct State {
        var requests: [[UInt8]] = []
        var mappings: [UInt16: UInt16] = [:]
        var garbageSent = 0
        var publicAddress: [UInt8]?
        var random = SplitMix64(seed: 42)
    }

    var address: HostPort { HostPort(host: "127.0.0.1", port: channel.localAddress!.port!) }
    var requests: [[UInt8]] { answerer.state.withLock { $0.requests } }
    var mappings: [UInt16: UInt16] { answerer.state.withLock { $0.mappings } }
    var garbageSent: Int { answerer.state.withLock { $0.garbageSent } }
    /// What a NAT-PMP script answers as the public address from now on.
    func setPublicAddress(_ address: [UInt8]) { answerer.state.withLock { $0.publicAddress = address } }

    private init(channel: any Channel, answerer: Answerer) {
        self.channel = channel
        self.answerer = answerer
    }

    static func with<T>(_ script: Script, _ body: (ScriptedGateway) async throws -> T) async throws -> T {
        let box = Answerer(script: script)
        let channel = try await DatagramBootstrap(group: .singletonMultiThreadedEventLoopGroup)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(box) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let gateway = ScriptedGateway(channel: channel, answerer: box)
        defer { channel.close(promise: nil) }
        return try await body(gateway)
    }

    private final class Answerer: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let script: Script
        let state = Locked(State())

        init(script: Script) { self.script = script }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let request = Array(envelope.data.readableBytesView)
            let answers = state.withLock { state in
                state.requests.append(request)
                return Self.answers(to: request, script: script, state: &state)
            }
            for answer in answers {
                context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: answer))), promise: nil)
            }
            context.flush()
        }

        static func answers(to request: [UInt8], script: Script, state: inout State) -> [[UInt8]] {
            switch script {
            case .silent:
                return []
            case .garbageOnly, .garbageThen:
                var garbage: [[UInt8]] = []
                for size in [0, 1, 2, 7, 8, 11, 13, 16, 17, 23, 59, 61, 2000] {
                    garbage.append((0..<size).map { _ in UInt8(truncatingIfNeeded: state.random.next()) })
                }
                // Well-formed, but not answers to what was asked.
                garbage.append(NATPMPMessage.mapAnswer(.tcp, epoch: 1, internalPort: 1, externalPort: 1, lifetime: 1).bytes)
                garbage.append(PCPMapMessage(isAnswer: true, lifetime: 1, nonce: [UInt8](repeating: 0xee, count: 12), proto: .udp,
                                             internalPort: 1, externalPort: 1).bytes)
                state.garbageSent += garbage.count
                guard case .garbageThen(let then) = script else { return garbage }
                return garbage + answers(to: request, script: then, state: &state)
            case .natPMPRefusing(let result):
                guard request.first == 0, request.count >= 2 else { return [NATPMPMessage.failure(opcode: request.count > 1 ? request[1] : 0, result: .unsupportedVersion, epoch: 1).bytes] }
                return [NATPMPMessage.failure(opcode: request[1], result: result, epoch: 1).bytes]
            case .natPMP(let address):
                guard let message = try? NATPMPMessage(decoding: request) else {
                    return [NATPMPMessage.failure(opcode: request.count > 1 ? request[1] : 0, result: .unsupportedVersion, epoch: 1).bytes]
                }
                switch message {
                case .publicAddressRequest:
                    return [NATPMPMessage.publicAddressAnswer(epoch: 1, address: state.publicAddress ?? address).bytes]
                case .mapRequest(let proto, let port, let suggested, let lifetime):
                    let key = port &+ (proto == .tcp ? 0x8000 : 0)
                    if lifetime == 0 {
                        state.mappings[key] = nil
                        return [NATPMPMessage.mapAnswer(proto, epoch: 1, internalPort: port, externalPort: 0, lifetime: 0).bytes]
                    }
                    state.mappings[key] = suggested
                    return [NATPMPMessage.mapAnswer(proto, epoch: 1, internalPort: port, externalPort: suggested == 0 ? port : suggested, lifetime: lifetime).bytes]
                default:
                    return []
                }
            case .pcp(let address, let externalPort):
                guard var message = try? PCPMapMessage(decoding: request), !message.isAnswer else { return [] }
                message.isAnswer = true
                message.epoch = 1
                message.clientAddress = [UInt8](repeating: 0, count: 16)
                message.externalPort = message.lifetime == 0 ? 0 : externalPort
                message.externalAddress = PCPMapMessage.mapped(ipv4: address)
                return [message.bytes]
            }
        }
    }
}

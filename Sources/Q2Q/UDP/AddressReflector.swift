import Locking
import Logging
import NIOCore
import NIOPosix

/// The presence server's UDP side: answers address-discovery requests with the
/// address each came from (``AddressDiscoveryMessage``), and NAT behaviour tests
/// (RFC 5780's, in our format) from up to four sockets: its address and, when
/// configured, a second address, each on its port and a second port. Stateless but
/// for delayed answers in flight (capped); anything else is ignored.
final class AddressReflector: Sendable {
    /// Which of the (up to) four sockets: its address (0 primary, 1 alternate) and port.
    struct Slot: Hashable, Sendable {
        var address: Int
        var port: Int
    }

    private let channels = Locked<[Slot: any Channel]>([:])
    /// The alternate address, and the second port (nil when it could not be bound).
    private let alternateAddress: String?
    private let alternatePort = Locked<Int?>(nil)
    private let delayed = Locked(0)
    /// Proves each answer reached the address it names (``AddressProofs``).
    private let proofs: AddressProofs
    /// Answers waiting out their delay at once; more tests asking for one are dropped.
    static let maximumDelayed = 1024

    private init(alternateAddress: String?, proofs: AddressProofs) {
        self.alternateAddress = alternateAddress
        self.proofs = proofs
    }

    /// Binds `host:port` (UDP), and for NAT behaviour tests `host:alternatePort` and,
    /// with `alternateAddress`, that address on both ports. Only the first must bind;
    /// a test that asks for a socket that is missing gets no answer.
    static func bind(host: String, port: Int, alternatePort: Int?, alternateAddress: String?, proofs: AddressProofs,
                     group: any EventLoopGroup, logger: Logger) async throws -> AddressReflector {
        let reflector = AddressReflector(alternateAddress: alternateAddress, proofs: proofs)
        let primary = try await reflector.bind(Slot(address: 0, port: 0), host: host, port: port, group: group)
        let primaryPort = primary.localAddress?.port ?? port
        if let alternatePort {
            do {
                let second = try await reflector.bind(Slot(address: 0, port: 1), host: host, port: alternatePort, group: group)
                reflector.alternatePort.withLock { $0 = second.localAddress?.port }
            } catch {
                await reflector.close()
                throw error
            }
        }
        if let alternateAddress {
            do {
                _ = try await reflector.bind(Slot(address: 1, port: 0), host: alternateAddress, port: primaryPort, group: group)
                if let second = reflector.alternatePort.withLock({ $0 }) {
                    _ = try await reflector.bind(Slot(address: 1, port: 1), host: alternateAddress, port: second, group: group)
                }
            } catch {
                await reflector.close()
                throw error
            }
        }
        logger.debug("address discovery on UDP", metadata: ["sockets": "\(reflector.localAddresses)"])
        return reflector
    }

    private func bind(_ slot: Slot, host: String, port: Int, group: any EventLoopGroup) async throws -> any Channel {
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .ipv6Only(binding: host)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Answerer(slot: slot, reflector: self)) }
            }
            .bind(host: host, port: port).get()
        channels.withLock { $0[slot] = channel }
        return channel
    }

    /// The primary socket's address.
    var localAddress: SocketAddress? { channels.withLock { $0[Slot(address: 0, port: 0)]?.localAddress } }

    var localAddresses: [SocketAddress] { channels.withLock { $0.values.compactMap(\.localAddress) } }

    /// The address a test's answer names as the server's other one: the alternate
    /// address on the second port, or (without one) our address on the second port,
    /// `0.0.0.0` standing for "the address you sent to" when we listen on every address.
    private func otherAddress(receivedOn local: SocketAddress?) -> HostPort? {
        guard let port = alternatePort.withLock({ $0 }) else { return nil }
        if let alternateAddress { return HostPort(host: alternateAddress, port: port) }
        return HostPort(host: local?.ipAddress ?? "0.0.0.0", port: port)
    }

    func close() async {
        let all = channels.withLock { channels in
            defer { channels = [:] }
            return Array(channels.values)
        }
        for channel in all { try? await channel.close() }
    }

    /// One socket's handler.
    private final class Answerer: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let slot: Slot
        let reflector: AddressReflector

        init(slot: Slot, reflector: AddressReflector) {
            self.slot = slot
            self.reflector = reflector
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard let seen = HostPort(envelope.remoteAddress) else { return }
            switch AddressDiscoveryMessage(decoding: envelope.data.readableBytesView) {
            case .request(let transaction)?:
                let proof = reflector.proofs.proof(for: seen)
                guard let answer = AddressDiscoveryMessage.answer(transaction: transaction, address: seen, proof: proof).bytes else { return }
                context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: answer))),
                                      promise: nil)
            case .test(let transaction, let test)?:
                reflector.answer(test, transaction: transaction, seen: seen, to: envelope.remoteAddress, receivedOn: slot,
                                 local: context.channel.localAddress)
            default:
                return
            }
        }

        /// A datagram the kernel could not deliver (ICMP unreachable) is no reason to stop.
        func errorCaught(context: ChannelHandlerContext, error: any Error) {}
    }

    /// Answers a test from the socket it asks for, after its delay.
    private func answer(_ test: AddressDiscoveryMessage.NATTest, transaction: [UInt8], seen: HostPort, to remote: SocketAddress,
                        receivedOn slot: Slot, local: SocketAddress?) {
        let from = Slot(address: test.changeAddress ? 1 - slot.address : slot.address, port: test.changePort ? 1 - slot.port : slot.port)
        guard let channel = channels.withLock({ $0[from] }),
              let answer = AddressDiscoveryMessage.testAnswer(transaction: transaction, address: seen, other: otherAddress(receivedOn: local)).bytes
        else { return }
        let envelope = AddressedEnvelope(remoteAddress: remote, data: ByteBuffer(bytes: answer))
        guard test.delay > 0 else {
            channel.writeAndFlush(envelope, promise: nil)
            return
        }
        guard delayed.withLock({ count in
            guard count < Self.maximumDelayed else { return false }
            count += 1
            return true
        }) else { return }
        channel.eventLoop.scheduleTask(in: .milliseconds(Int64(test.delay))) { [self] in
            delayed.withLock { $0 -= 1 }
            channel.writeAndFlush(envelope, promise: nil)
        }
    }
}

import Logging
import NIOCore
import NIOPosix

/// Whether the home gateway maps ports, and by which protocol: a throwaway UDP port is
/// mapped for a short while, then the mapping deleted (`vertex doctor`).
public struct PortMappingProbe: Sendable, Codable, Equatable {
    /// "PCP" or "NAT-PMP".
    public var protocolName: String
    /// The public address and port the gateway granted.
    public var external: HostPort

    public static func run(gateway: HostPort? = nil, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                           logger: Logger = Logger(label: "vertex.portmap")) async -> Result<PortMappingProbe, PortMappingError> {
        let mapper = PortMapper(gateway: gateway, group: group, logger: logger)
        guard let socket = try? await DatagramBootstrap(group: group).bind(host: "0.0.0.0", port: 0).get(),
              let port = socket.localAddress?.port else { return .failure(.noGateway) }
        defer { socket.close(promise: nil) }
        let nonce = (0..<PCPMapMessage.nonceSize).map { _ in UInt8.random(in: .min ... .max) }
        do {
            let mapping = try await mapper.map(.udp, internalPort: port, lifetime: .seconds(30), nonce: nonce)
            await mapper.unmap(.udp, internalPort: port, nonce: nonce)
            return .success(PortMappingProbe(protocolName: mapping.protocolName, external: mapping.external))
        } catch let error as PortMappingError {
            return .failure(error)
        } catch {
            return .failure(.malformed("\(error)"))
        }
    }
}

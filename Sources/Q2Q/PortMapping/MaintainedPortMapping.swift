import Locking
import Logging

/// One port kept mapped on the gateway for as long as it is open: mapped at once,
/// renewed before its lifetime ends (and at least every `refresh`, which is how a
/// changed public address or a gateway that restarted is noticed), tried again with
/// backoff when the gateway stops answering, and deleted by ``close()``.
final class MaintainedPortMapping: Sendable {
    let proto: PortMappingProtocol
    let internalPort: Int
    private let mapper: PortMapper
    /// PCP's name for this mapping: renewals and the deletion must repeat it.
    private let nonce: [UInt8]
    private let state = Locked(State())

    private struct State {
        var current: PortMapper.Mapping?
        var task: Task<Void, Never>?
    }

    /// The wait before trying again after a failure, doubling up to the last.
    static let retryDelays: [Duration] = [.seconds(5), .seconds(15), .seconds(60), .seconds(300)]

    /// Starts mapping `internalPort`; `changed` hears each new mapping, and `nil` when
    /// one is lost (expired without a renewal).
    init(_ proto: PortMappingProtocol, internalPort: Int, mapper: PortMapper, lifetime: Duration, refresh: Duration, logger: Logger,
         changed: @escaping @Sendable (PortMapper.Mapping?) -> Void) {
        self.proto = proto
        self.internalPort = internalPort
        self.mapper = mapper
        self.nonce = (0..<PCPMapMessage.nonceSize).map { _ in UInt8.random(in: .min ... .max) }
        let task = Task { [self] in
            await maintain(lifetime: lifetime, refresh: refresh, logger: logger, changed: changed)
        }
        state.withLock { $0.task = task }
    }

    /// What the gateway granted last, while it lasts.
    var current: PortMapper.Mapping? { state.withLock { $0.current } }

    private func maintain(lifetime: Duration, refresh: Duration, logger: Logger,
                          changed: @Sendable (PortMapper.Mapping?) -> Void) async {
        var failures = 0
        var expires: ContinuousClock.Instant?
        let metadata: Logger.Metadata = ["protocol": "\(proto)", "port": "\(internalPort)"]
        while !Task.isCancelled {
            let wait: Duration
            do {
                let mapping = try await mapper.map(proto, internalPort: internalPort, lifetime: lifetime, nonce: nonce)
                failures = 0
                expires = .now + mapping.lifetime
                let previous = state.withLock { state in
                    defer { state.current = mapping }
                    return state.current
                }
                if previous != mapping {
                    logger.info("mapped a port on the gateway", metadata: metadata.merging(
                        ["external": "\(mapping.external)", "by": "\(mapping.protocolName)", "lifetime": "\(mapping.lifetime)"]) { $1 })
                    changed(mapping)
                }
                // Renewed at half its lifetime (RFC 6886 §3.3 suggests so), or sooner.
                wait = max(.seconds(1), min(mapping.lifetime / 2, refresh))
            } catch PortMappingError.noGateway {
                logger.debug("no gateway to map ports on", metadata: metadata)
                return
            } catch is CancellationError {
                return
            } catch {
                if failures == 0 {
                    logger.info("no port mapping", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                }
                if let expiry = expires, expiry <= .now {
                    expires = nil
                    state.withLock { $0.current = nil }
                    changed(nil)
                }
                wait = Self.retryDelays[min(failures, Self.retryDelays.count - 1)]
                failures += 1
            }
            try? await Task.sleep(for: wait)
        }
    }

    /// Stops renewing and deletes the mapping on the gateway: always, once the gateway
    /// ever answered (a request cut short by the close may still have made one).
    func close() async {
        let task = state.withLock { state in
            state.current = nil
            return state.task
        }
        task?.cancel()
        await task?.value
        await mapper.unmap(proto, internalPort: internalPort, nonce: nonce)
    }
}

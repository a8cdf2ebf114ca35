import Locking
import NIOCore
import PTCP

/// PTCP connections that listeners open back to our shared UDP port, waiting for the
/// `connect` they belong to. A listener behind a NAT that maps every destination to a
/// new port connects back as soon as it sees our `udp_source` in `inbound`, which may be
/// before our `inbound` answer names it: a connection is held (at most `capacity`, for
/// `holdTime`) until an attempt takes the one from its listener's address.
final class ConnectBacks: Sendable {
    static let capacity = 16
    static let holdTime: Duration = .seconds(10)

    private struct State {
        var held: [(channel: any Channel, host: String, arrived: ContinuousClock.Instant)] = []
        var waiting: [(id: Int, host: String, continuation: CheckedContinuation<(any Channel)?, Never>)] = []
        var nextID = 0
    }
    private let state = Locked(State())

    /// A connection arrived: hand it to an attempt waiting for its host, or hold it.
    func arrived(_ channel: any Channel) {
        guard let host = channel.remoteAddress?.ipAddress else {
            channel.close(promise: nil)
            return
        }
        let now = ContinuousClock.now
        let (waiter, dropped) = state.withLock { state -> (CheckedContinuation<(any Channel)?, Never>?, [any Channel]) in
            if let index = state.waiting.firstIndex(where: { $0.host == host }) {
                return (state.waiting.remove(at: index).continuation, [])
            }
            var dropped = state.held.filter { now - $0.arrived > Self.holdTime }.map(\.channel)
            state.held.removeAll { now - $0.arrived > Self.holdTime }
            if state.held.count >= Self.capacity { dropped.append(state.held.removeFirst().channel) }
            state.held.append((channel, host, now))
            return (nil, dropped)
        }
        for channel in dropped { channel.close(promise: nil) }
        waiter?.resume(returning: channel)
    }

    /// The connection from `host`, held or arriving within `timeout`; `nil` if none.
    func take(from host: String, timeout: Duration) async -> (any Channel)? {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let held = state.withLock { state -> (any Channel)? in
                    if let index = state.held.firstIndex(where: { $0.host == host }) {
                        return state.held.remove(at: index).channel
                    }
                    state.waiting.append((id, host, continuation))
                    return nil
                }
                if let held {
                    continuation.resume(returning: held)
                    return
                }
                Task { [self] in
                    try? await Task.sleep(for: timeout)
                    giveUp(id)
                }
                // Cancelled before the wait was registered: the handler found nothing to end.
                if Task.isCancelled { giveUp(id) }
            }
        } onCancel: {
            giveUp(id)
        }
    }

    private func giveUp(_ id: Int) {
        state.withLock { state in
            state.waiting.firstIndex { $0.id == id }.map { state.waiting.remove(at: $0).continuation }
        }?.resume(returning: nil)
    }
}

import AMP
import Foundation
import Locking
import Logging
import NIOCore

/// The presence server's relay: pairs of virtual channels, one on each node's
/// connection, whose `write`s, `credit`s, `close`s and chokes it forwards. It sees only
/// what the nodes send, which is TLS between them.
///
/// Backpressure is the channels' credit windows (``ChannelWindow``), which the relay
/// enforces rather than trusts (``RelayWindow``): a node may send only what the other
/// end granted, a grant may only give back what the relay forwarded, and grants from a
/// node whose connection is not draining are withheld. So the relay holds at most one
/// window per direction of a channel, and never has to stop reading a node's connection
/// (which would stall that node's other channels). Every window is reserved from a
/// global budget when the channel opens; a channel the budget cannot cover is refused.
/// A node that breaks the window rules has both ends of that channel closed.
final class RelayTable: Sendable {
    struct End: Hashable, Sendable {
        var connection: ObjectIdentifier
        var id: Int
    }

    private struct Route {
        let to: AMPConnection
        let toID: Int
        /// The direction from this end to the other.
        var window: RelayWindow
        /// A wait for the other end's connection to drain is registered.
        var waitingForDrain = false
        /// Who opened the channel, and the connection it was opened to (for the caps).
        let pair: PairKey
    }

    /// The caller of a relayed channel and the connection it reaches.
    struct PairKey: Hashable, Sendable {
        var caller: Q2QAddress
        var target: ObjectIdentifier
    }

    private struct State {
        var routes: [End: Route] = [:]
        /// Relayed channels ending on each connection.
        var channelsPerConnection: [ObjectIdentifier: Int] = [:]
        /// Relayed channels per (caller, target connection).
        var channelsPerPair: [PairKey: Int] = [:]
        /// Bytes of windows reserved by open channels.
        var reserved = 0
        /// `close`s for channels not spliced yet, per connection (see ``close(from:id:)``).
        var closedEarly: [ObjectIdentifier: Set<Int>] = [:]
        /// Listener ids offered in `inbound` answers (all live ``offerLifetime``): the
        /// connection of the node that offered each, owned by the caller it was offered
        /// to, the only one who may use it.
        var offers = ExpiringTable<Q2QAddress, AMPConnection>()
        var statistics = RelayStatistics()
    }

    /// The largest window the relay passes on: what one direction of one relayed
    /// channel may make it hold.
    static let maximumWindow = 8 * 1024 * 1024
    /// How long an offered listener id may be relayed to (the listener's claim lifetime).
    static let offerLifetime: TimeInterval = 120
    /// Early `close`s remembered per connection: no more than it may have channels.
    static let maximumEarlyClosesPerConnection = 256

    let limits: RelayLimits
    private let state = Locked(State())
    /// Sees every body forwarded (tests use it to check that only ciphertext passes).
    let observer: (@Sendable (ByteBuffer) -> Void)?
    private let logger: Logger

    init(limits: RelayLimits = RelayLimits(), observer: (@Sendable (ByteBuffer) -> Void)? = nil, logger: Logger) {
        self.limits = limits
        self.observer = observer
        self.logger = logger
    }

    // MARK: Offers

    /// Whether `caller` may be given another offer (its live offers are under the cap).
    func mayOffer(to caller: Q2QAddress, now: Date) -> Bool {
        state.withLock { state in
            state.offers.expire(now: now)
            return state.offers.count(of: caller) < limits.offersPerCaller
        }
    }

    /// Remembers that `connection`'s node offered `id` to `caller`.
    func remember(offer id: String, from connection: AMPConnection, to caller: Q2QAddress, now: Date) {
        state.withLock { state in
            state.offers.expire(now: now)
            state.offers.insert(id, owner: caller, expires: now + Self.offerLifetime, value: connection)
        }
    }

    /// Takes the offer `id` for `caller`: the connection of the node that made it, once
    /// (an offer opens one relayed channel), and only for the caller it was made to.
    func takeOffer(_ id: String, for caller: Q2QAddress, now: Date) -> AMPConnection? {
        state.withLock { state in
            state.offers.expire(now: now)
            guard let offer = state.offers.live(id, now: now), offer.owner == caller else { return nil }
            state.offers.remove(id)
            return offer.value
        }
    }

    // MARK: Opening channels

    /// Splices `a` (channel `aID` on connection `a`, opened by `caller`, which grants
    /// `aWindow`) with `b`'s `bID`, reserving `aWindow` and the largest window `b` may
    /// answer from the budget. `b` may send `aWindow` at once; `a` nothing until
    /// ``accepted`` gives `b`'s window. Returns why not, when the caps or the budget
    /// do not allow it or an id is taken; nil when spliced.
    func splice(_ a: AMPConnection, _ aID: Int, window aWindow: Int, with b: AMPConnection, _ bID: Int,
                caller: Q2QAddress) -> String? {
        let endA = End(connection: ObjectIdentifier(a), id: aID)
        let endB = End(connection: ObjectIdentifier(b), id: bID)
        let pair = PairKey(caller: caller, target: ObjectIdentifier(b))
        return state.withLock { state -> String? in
            if state.closedEarly[endA.connection]?.remove(endA.id) != nil { return "virtual channel id \(aID) was closed before it opened" }
            guard state.routes[endA] == nil, state.routes[endB] == nil else { return "virtual channel id \(aID) is in use" }
            let perConnection = limits.channelsPerConnection
            if state.channelsPerConnection[endA.connection, default: 0] >= perConnection
                || state.channelsPerConnection[endB.connection, default: 0] >= perConnection {
                return "too many relayed channels (at most \(perConnection) per connection)"
            }
            if state.channelsPerPair[pair, default: 0] >= limits.channelsPerCallerAndTarget {
                return "too many relayed channels from \(caller) to this listener (at most \(limits.channelsPerCallerAndTarget))"
            }
            let reservation = Self.maximumWindow + aWindow
            if state.reserved + reservation > limits.budget {
                state.statistics.budgetRefusals += 1
                return "the relay is at its memory budget (\(state.reserved >> 20) of \(limits.budget >> 20) MiB reserved by open channels); try again later"
            }
            state.routes[endA] = Route(to: b, toID: bID, window: RelayWindow(reserving: Self.maximumWindow), pair: pair)
            state.routes[endB] = Route(to: a, toID: aID, window: RelayWindow(size: aWindow), pair: pair)
            state.reserved += reservation
            state.channelsPerConnection[endA.connection, default: 0] += 1
            state.channelsPerConnection[endB.connection, default: 0] += 1
            state.channelsPerPair[pair, default: 0] += 1
            return nil
        }
    }

    /// The accepting end answered with its window: `a`'s end may now send that much.
    func accepted(_ a: AMPConnection, _ aID: Int, window bWindow: Int) {
        let end = End(connection: ObjectIdentifier(a), id: aID)
        state.withLock { state in
            guard var route = state.routes[end] else { return }
            state.reserved -= route.window.size - bWindow
            route.window.open(size: bWindow)
            state.routes[end] = route
        }
    }

    func isInUse(_ connection: AMPConnection, _ id: Int) -> Bool {
        state.withLock { $0.routes[End(connection: ObjectIdentifier(connection), id: id)] != nil }
    }

    // MARK: Forwarding

    /// Forwards a `write` from `connection`'s channel `id`, if its credit covers it.
    func write(from connection: AMPConnection, id: Int, body: AMPBytes) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        let count = body.buffer.readableBytes
        let checked = state.withLock { state -> Result<Route, ChannelWindowError>? in
            guard var route = state.routes[end] else { return nil }
            do throws(ChannelWindowError) {
                try route.window.forward(count)
            } catch {
                return .failure(error)
            }
            state.routes[end] = route
            state.statistics.forwardedBytes += count
            return .success(route)
        }
        switch checked {
        case .success(let route)?:
            observer?(body.buffer)
            try? route.to.sendWithoutWaiting(Write.self, .init(id: route.toID, body: body))
        case .failure(let error)?:
            brokeWindow(end, connection, error)
        case nil:
            break
        }
    }

    /// A `credit` from `connection`'s channel `id` (the receiver): its sender may send
    /// `bytes` more, now, or once `connection` drains.
    func credit(from connection: AMPConnection, id: Int, bytes: Int) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        let writable = connection.isWritable
        enum Outcome { case pass(AMPConnection, Int, Int), withhold(End, registerDrain: Bool), broken(ChannelWindowError), none }
        let outcome: Outcome = state.withLock { state in
            guard let route = state.routes[end] else { return .none }
            let sender = End(connection: ObjectIdentifier(route.to), id: route.toID)
            guard var senderRoute = state.routes[sender] else { return .none }
            let passed: Int
            do throws(ChannelWindowError) {
                passed = try senderRoute.window.credit(bytes, receiverWritable: writable)
            } catch {
                return .broken(error)
            }
            if passed > 0 {
                state.routes[sender] = senderRoute
                return .pass(route.to, route.toID, passed)
            }
            state.statistics.withheldCredits += 1
            let register = !senderRoute.waitingForDrain
            senderRoute.waitingForDrain = true
            state.routes[sender] = senderRoute
            return .withhold(sender, registerDrain: register)
        }
        switch outcome {
        case .pass(let to, let toID, let bytes):
            try? to.sendWithoutWaiting(Credit.self, .init(id: toID, bytes: bytes))
        case .withhold(let sender, let registerDrain):
            guard registerDrain else { return }
            connection.whenWritable().whenSuccess { [self] in release(sender) }
        case .broken(let error):
            brokeWindow(end, connection, error)
        case .none:
            break
        }
    }

    /// The receiver's connection drained: the credit withheld from `sender` goes to it.
    private func release(_ sender: End) {
        let released: (AMPConnection, Int)? = state.withLock { state in
            guard var route = state.routes[sender] else { return nil }
            route.waitingForDrain = false
            let bytes = route.window.release()
            state.routes[sender] = route
            guard bytes > 0, let other = state.routes[End(connection: ObjectIdentifier(route.to), id: route.toID)] else { return nil }
            return (other.to, bytes)
        }
        if let (to, bytes) = released {
            try? to.sendWithoutWaiting(Credit.self, .init(id: sender.id, bytes: bytes))
        }
    }

    /// A `Choke`/`Unchoke` (the original's) from `connection`'s channel `id` goes to the other end.
    func choke(from connection: AMPConnection, id: Int, choked: Bool) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = state.withLock({ $0.routes[end] }) else { return }
        if choked {
            try? route.to.sendWithoutWaiting(Choke.self, .init(id: route.toID))
        } else {
            try? route.to.sendWithoutWaiting(Unchoke.self, .init(id: route.toID))
        }
    }

    /// `end` broke the window rules: both ends of its channel are closed.
    private func brokeWindow(_ end: End, _ connection: AMPConnection, _ error: ChannelWindowError) {
        logger.warning("closing a relayed channel whose node broke its window",
                       metadata: ["peer": "\(connection.channel.remoteAddress.map { "\($0)" } ?? "?")",
                                  "channel": "\(end.id)", "error": "\(error)"])
        state.withLock { $0.statistics.brokenWindows += 1 }
        close(from: connection, id: end.id)
        Task { _ = try? await connection.call(Close.self, .init(id: end.id)) }
    }

    // MARK: Closing

    /// A `close` from one end: forget the pair and close the other end.
    func close(from connection: AMPConnection, id: Int) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        let other: (AMPConnection, Int)? = state.withLock { state in
            guard let route = state.routes[end] else {
                // A node that gives up on a channel at once sends `close` right behind
                // `virtual`, and `close` is handled before the `virtual` (which waits for
                // the other node) has spliced anything. Ids are never reused on a
                // connection, so a remembered close can only mean that channel. Bounded
                // per connection, so nobody can make the relay forget another's.
                if state.closedEarly[end.connection, default: []].count < Self.maximumEarlyClosesPerConnection {
                    state.closedEarly[end.connection, default: []].insert(end.id)
                }
                return nil
            }
            Self.unsplice(end, route, &state)
            return (route.to, route.toID)
        }
        if let (to, toID) = other {
            Task { _ = try? await to.call(Close.self, .init(id: toID)) }
        }
    }

    /// Forgets the pair of `end`, and what it reserved and counted.
    private static func unsplice(_ end: End, _ route: Route, _ state: inout State) {
        let otherEnd = End(connection: ObjectIdentifier(route.to), id: route.toID)
        state.routes[end] = nil
        let other = state.routes.removeValue(forKey: otherEnd)
        state.reserved -= route.window.size + (other?.window.size ?? 0)
        for connection in [end.connection, otherEnd.connection] {
            let left = state.channelsPerConnection[connection, default: 1] - 1
            state.channelsPerConnection[connection] = left > 0 ? left : nil
        }
        let left = state.channelsPerPair[route.pair, default: 1] - 1
        state.channelsPerPair[route.pair] = left > 0 ? left : nil
    }

    /// A node's connection closed: close every channel spliced to it.
    func connectionClosed(_ connection: AMPConnection) {
        let id = ObjectIdentifier(connection)
        let orphans: [(AMPConnection, Int)] = state.withLock { state in
            state.closedEarly[id] = nil
            var orphans: [(AMPConnection, Int)] = []
            for (end, route) in state.routes where end.connection == id {
                // Both ends may be on this connection: the second was unspliced with the first.
                guard state.routes[end] != nil else { continue }
                Self.unsplice(end, route, &state)
                orphans.append((route.to, route.toID))
            }
            state.offers.removeAll { $0.value === connection }
            return orphans
        }
        for (other, otherID) in orphans {
            Task { _ = try? await other.call(Close.self, .init(id: otherID)) }
        }
    }

    var count: Int { state.withLock { $0.routes.count / 2 } }

    /// Each direction's window, one line per relayed end (for diagnosing a stall).
    var windowsDescription: [String] {
        state.withLock { state in
            state.routes.map { end, route in
                "end \(end.id) -> \(route.toID): size \(route.window.size), available \(route.window.available), "
                    + "unacknowledged \(route.window.unacknowledged), withheld \(route.window.withheld), "
                    + "waiting for drain \(route.waitingForDrain), receiver writable \(route.to.isWritable)"
            }.sorted()
        }
    }

    /// Bytes of windows reserved by open channels.
    var reservedBytes: Int { state.withLock { $0.reserved } }

    var statistics: RelayStatistics { state.withLock { $0.statistics } }
}

/// What bounds the relay.
public struct RelayLimits: Sendable, Hashable {
    /// Bytes of windows all open relayed channels may reserve together: the most the
    /// relay can hold. A channel that does not fit is refused with a clear error.
    public var budget: Int
    /// Relayed channels one node connection may have open at once.
    public var channelsPerConnection: Int
    /// Relayed channels one caller may have open to one listener's connection, so that
    /// one caller cannot take all of a listener's channels.
    public var channelsPerCallerAndTarget: Int
    /// Offers (listener ids from `inbound`) one caller may hold unexpired at once.
    public var offersPerCaller: Int

    public init(budget: Int = 1 << 30, channelsPerConnection: Int = 64, channelsPerCallerAndTarget: Int = 8,
                offersPerCaller: Int = 64) {
        self.budget = budget
        self.channelsPerConnection = channelsPerConnection
        self.channelsPerCallerAndTarget = channelsPerCallerAndTarget
        self.offersPerCaller = offersPerCaller
    }
}

/// What the relay has done since the server started (for operators and tests).
public struct RelayStatistics: Sendable, Hashable {
    /// Bytes of `write` bodies forwarded.
    public var forwardedBytes = 0
    /// Channels refused because their windows did not fit the budget.
    public var budgetRefusals = 0
    /// Credits withheld from a sender because its receiver's connection was full.
    public var withheldCredits = 0
    /// Channels closed because a node broke the window rules.
    public var brokenWindows = 0
}

import AMP
import Foundation
import Logging
import NIOCore
import Synchronization

/// The presence server's relay: pairs of virtual channels, one on each node's
/// connection, whose `write`s, `credit`s, `close`s and chokes it forwards. It sees only
/// what the nodes send, which is TLS between them.
///
/// Backpressure is the channels' credit windows (``ChannelWindow``), which the relay
/// checks as well as forwards: a node may send on a relayed channel only what the other
/// end granted, so the relay holds at most one window per direction of a channel,
/// whatever the speed of the receiving node, and never has to stop reading a node's
/// connection (which would stall that node's other channels). A node that sends beyond
/// its credit has both ends of that channel closed.
final class RelayTable: Sendable {
    struct End: Hashable, Sendable {
        var connection: ObjectIdentifier
        var id: Int
    }

    private struct Route {
        let to: AMPConnection
        let toID: Int
        /// What this end may still send to the other.
        var credit: SendCredit
    }

    /// The largest window the relay passes on: what one direction of one relayed
    /// channel may make it hold.
    static let maximumWindow = 8 * 1024 * 1024

    private let routes = Mutex<[End: Route]>([:])
    /// `close`s for channels not spliced yet: a node that gives up on a channel at once
    /// sends `close` right behind `virtual`, and `close` is handled before the `virtual`
    /// (which waits for the other node) has spliced anything. Ids are never reused on a
    /// connection, so a remembered close can only mean that channel. Bounded.
    private let closedEarly = Mutex<Set<End>>([])
    static let maximumEarlyCloses = 4096
    /// Listener ids offered in `inbound` answers → the connection of the node that offered them.
    private let offers = Mutex<[String: (connection: AMPConnection, expires: Date)]>([:])
    /// Sees every body forwarded (tests use it to check that only ciphertext passes).
    let observer: (@Sendable (ByteBuffer) -> Void)?
    private let logger: Logger

    init(observer: (@Sendable (ByteBuffer) -> Void)? = nil, logger: Logger) {
        self.observer = observer
        self.logger = logger
    }

    func remember(offer id: String, from connection: AMPConnection, now: Date) {
        offers.withLock { offers in
            offers = offers.filter { $0.value.expires > now }
            offers[id] = (connection, now + 120)
        }
    }

    func offeringConnection(for id: String, now: Date) -> AMPConnection? {
        offers.withLock { offers in
            guard let offer = offers[id], offer.expires > now else { return nil }
            return offer.connection
        }
    }

    /// Splices `a` (channel `aID` on connection `a`, which grants `aWindow`) with `b`'s
    /// `bID`. `b` may send `aWindow` at once; `a` nothing until ``accepted`` gives `b`'s window.
    func splice(_ a: AMPConnection, _ aID: Int, window aWindow: Int, with b: AMPConnection, _ bID: Int) -> Bool {
        let endA = End(connection: ObjectIdentifier(a), id: aID)
        let endB = End(connection: ObjectIdentifier(b), id: bID)
        if closedEarly.withLock({ $0.remove(endA) != nil }) { return false }
        return routes.withLock { routes in
            guard routes[endA] == nil, routes[endB] == nil else { return false }
            routes[endA] = Route(to: b, toID: bID, credit: SendCredit(initial: 0))
            routes[endB] = Route(to: a, toID: aID, credit: SendCredit(initial: aWindow))
            return true
        }
    }

    /// The accepting end answered with its window: `a`'s end may now send that much.
    func accepted(_ a: AMPConnection, _ aID: Int, window bWindow: Int) {
        grant(End(connection: ObjectIdentifier(a), id: aID), bWindow)
    }

    func isInUse(_ connection: AMPConnection, _ id: Int) -> Bool {
        routes.withLock { $0[End(connection: ObjectIdentifier(connection), id: id)] != nil }
    }

    /// How many relayed channels end on `connection`.
    func channelCount(of connection: AMPConnection) -> Int {
        let id = ObjectIdentifier(connection)
        return routes.withLock { routes in routes.keys.count { $0.connection == id } }
    }

    /// Forwards a `write` from `connection`'s channel `id`, if its credit covers it.
    func write(from connection: AMPConnection, id: Int, body: AMPBytes) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        let checked = routes.withLock { routes -> Result<Route, ChannelWindowError>? in
            guard var route = routes[end] else { return nil }
            do throws(ChannelWindowError) {
                try route.credit.spend(body.buffer.readableBytes)
            } catch {
                return .failure(error)
            }
            routes[end] = route
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

    /// A `credit` from `connection`'s channel `id` (the receiver): the other end, its
    /// sender, may send `bytes` more.
    func credit(from connection: AMPConnection, id: Int, bytes: Int) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = routes.withLock({ $0[end] }) else { return }
        let sender = End(connection: ObjectIdentifier(route.to), id: route.toID)
        guard grant(sender, bytes) else {
            brokeWindow(end, connection, ChannelWindowError("a grant of \(bytes) bytes"))
            return
        }
        try? route.to.sendWithoutWaiting(Credit.self, .init(id: route.toID, bytes: bytes))
    }

    /// Adds `bytes` to `end`'s credit; false when that breaks the rules.
    @discardableResult
    private func grant(_ end: End, _ bytes: Int) -> Bool {
        routes.withLock { routes in
            guard var route = routes[end] else { return true }
            do {
                try route.credit.grant(bytes)
            } catch {
                return false
            }
            routes[end] = route
            return true
        }
    }

    /// A `Choke`/`Unchoke` (the original's) from `connection`'s channel `id` goes to the other end.
    func choke(from connection: AMPConnection, id: Int, choked: Bool) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = routes.withLock({ $0[end] }) else { return }
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
        close(from: connection, id: end.id)
        Task { _ = try? await connection.call(Close.self, .init(id: end.id)) }
    }

    /// A `close` from one end: forget the pair and close the other end.
    func close(from connection: AMPConnection, id: Int) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = routes.withLock({ routes -> Route? in
            guard let route = routes.removeValue(forKey: end) else { return nil }
            routes[End(connection: ObjectIdentifier(route.to), id: route.toID)] = nil
            return route
        }) else {
            closedEarly.withLock { early in
                if early.count < Self.maximumEarlyCloses { early.insert(end) }
            }
            return
        }
        let other = route.to
        Task { _ = try? await other.call(Close.self, .init(id: route.toID)) }
    }

    /// A node's connection closed: close every channel spliced to it.
    func connectionClosed(_ connection: AMPConnection) {
        let id = ObjectIdentifier(connection)
        closedEarly.withLock { early in early = early.filter { $0.connection != id } }
        let orphans: [(AMPConnection, Int)] = routes.withLock { routes in
            var orphans: [(AMPConnection, Int)] = []
            for (end, route) in routes where end.connection == id {
                routes[end] = nil
                routes[End(connection: ObjectIdentifier(route.to), id: route.toID)] = nil
                orphans.append((route.to, route.toID))
            }
            return orphans
        }
        for (other, otherID) in orphans {
            Task { _ = try? await other.call(Close.self, .init(id: otherID)) }
        }
        offers.withLock { offers in offers = offers.filter { $0.value.connection !== connection } }
    }

    var count: Int { routes.withLock { $0.count / 2 } }
}

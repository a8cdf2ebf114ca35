import AMP
import Foundation
import NIOCore
import Synchronization

/// The presence server's relay: pairs of virtual channels, one on each node's
/// connection, whose `write`s, `close`s and chokes it forwards. It sees only what
/// the nodes send, which is TLS between them.
///
/// Backpressure: when the receiving node's connection stops taking bytes, the sender's
/// connection is not read until it drains; when the receiving node chokes its end (its
/// application is not reading), the sender is choked until it unchokes. So the relay
/// holds at most one read's worth beyond the socket buffers.
final class RelayTable: Sendable {
    struct End: Hashable, Sendable {
        var connection: ObjectIdentifier
        var id: Int
    }

    private struct Route {
        let to: AMPConnection
        let toID: Int
        /// The receiving node choked its end.
        var chokedByReceiver = false
        /// What we last told the sender.
        var senderChoked = false
    }

    private let routes = Mutex<[End: Route]>([:])
    /// Listener ids offered in `inbound` answers → the connection of the node that offered them.
    private let offers = Mutex<[String: (connection: AMPConnection, expires: Date)]>([:])
    /// Sees every body forwarded (tests use it to check that only ciphertext passes).
    let observer: (@Sendable (ByteBuffer) -> Void)?

    init(observer: (@Sendable (ByteBuffer) -> Void)? = nil) {
        self.observer = observer
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

    /// Splices `a` (channel `aID` on connection `a`) with `b`'s `bID`.
    func splice(_ a: AMPConnection, _ aID: Int, with b: AMPConnection, _ bID: Int) -> Bool {
        let endA = End(connection: ObjectIdentifier(a), id: aID)
        let endB = End(connection: ObjectIdentifier(b), id: bID)
        return routes.withLock { routes in
            guard routes[endA] == nil, routes[endB] == nil else { return false }
            routes[endA] = Route(to: b, toID: bID)
            routes[endB] = Route(to: a, toID: aID)
            return true
        }
    }

    func isInUse(_ connection: AMPConnection, _ id: Int) -> Bool {
        routes.withLock { $0[End(connection: ObjectIdentifier(connection), id: id)] != nil }
    }

    /// Forwards a `write` from `connection`'s channel `id`.
    func write(from connection: AMPConnection, id: Int, body: AMPBytes) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = routes.withLock({ $0[end] }) else { return }
        observer?(body.buffer)
        try? route.to.sendWithoutWaiting(Write.self, .init(id: route.toID, body: body))
        if !route.to.isWritable {
            // Read nothing more from the sender's connection until the receiver's socket
            // drains: TCP then slows the sender, with no round trip of Choke/Unchoke
            // (which, at every watermark crossing, cut throughput to a trickle).
            connection.pauseReading(until: route.to.whenWritable())
        }
    }

    /// A `Choke`/`Unchoke` from `connection`'s channel `id` holds or releases the other end's sender.
    func choke(from connection: AMPConnection, id: Int, choked: Bool) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = routes.withLock({ $0[end] }) else { return }
        // The receiver (this end) choked: the sender is the other end.
        let other = End(connection: ObjectIdentifier(route.to), id: route.toID)
        update(other, sender: route.to, senderID: route.toID) { $0.chokedByReceiver = choked }
    }

    /// Applies `change` to the route from `end` and tells its sender if its choke state changed.
    private func update(_ end: End, sender: AMPConnection, senderID: Int, _ change: (inout Route) -> Void) {
        let message: Bool? = routes.withLock { routes in
            guard var route = routes[end] else { return nil }
            change(&route)
            let shouldChoke = route.chokedByReceiver
            defer { routes[end] = route }
            guard shouldChoke != route.senderChoked else { return nil }
            route.senderChoked = shouldChoke
            return shouldChoke
        }
        switch message {
        case true?: try? sender.sendWithoutWaiting(Choke.self, .init(id: senderID))
        case false?: try? sender.sendWithoutWaiting(Unchoke.self, .init(id: senderID))
        case nil: break
        }
    }

    /// A `close` from one end: forget the pair and close the other end.
    func close(from connection: AMPConnection, id: Int) {
        let end = End(connection: ObjectIdentifier(connection), id: id)
        guard let route = routes.withLock({ routes -> Route? in
            guard let route = routes.removeValue(forKey: end) else { return nil }
            routes[End(connection: ObjectIdentifier(route.to), id: route.toID)] = nil
            return route
        }) else { return }
        let other = route.to
        Task { _ = try? await other.call(Close.self, .init(id: route.toID)) }
    }

    /// A node's connection closed: close every channel spliced to it.
    func connectionClosed(_ connection: AMPConnection) {
        let id = ObjectIdentifier(connection)
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

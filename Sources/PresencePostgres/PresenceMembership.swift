import Foundation
import Logging
import PostgresNIO
import Q2Q

/// The presence nodes of a domain, as their shared database knows them: each node
/// writes a heartbeat every ``interval`` and counts as gone once none came for
/// ``expiry``, judged by the database's clock (the nodes' clocks need not agree).
public final class PresenceMembership: Sendable {
    public let name: String
    public let address: String
    let store: PostgresPresenceStore
    let interval: Duration
    let expiry: Duration

    public init(store: PostgresPresenceStore, name: String, address: String,
                interval: Duration = .seconds(1), expiry: Duration = .seconds(5)) {
        self.store = store
        self.name = name
        self.address = address
        self.interval = interval
        self.expiry = expiry
    }

    /// Beats until cancelled, telling `peersUp` the other nodes that are up after each
    /// beat; then leaves (so that the others see this node gone at once).
    public func run(peersUp: @escaping @Sendable ([PresencePeer]) -> Void) async {
        while !Task.isCancelled {
            do {
                try await beat()
                peersUp(try await peers())
            } catch {
                store.logger.warning("membership: \(error)")
            }
            try? await Task.sleep(for: interval)
        }
        try? await leave()
    }

    func beat() async throws {
        try await store.run("a heartbeat of \(name)") { [self] in
            try await store.client.query("""
                INSERT INTO presence_node (name, address, heartbeat) VALUES (\(name), \(address), now())
                ON CONFLICT (name) DO UPDATE SET address = excluded.address, heartbeat = now()
                """)
        }
    }

    /// The other nodes whose last heartbeat is younger than ``expiry``.
    public func peers() async throws -> [PresencePeer] {
        let seconds = expiry.secondsValue
        return try await store.run("listing presence nodes") { [self] in
            let rows = try await store.client.query("""
                SELECT name, address, EXTRACT(EPOCH FROM now() - heartbeat)::float8 FROM presence_node
                WHERE name <> \(name) AND heartbeat > now() - make_interval(secs => \(seconds)) ORDER BY name
                """)
            var peers: [PresencePeer] = []
            for try await (name, address, age) in rows.decode((String, String, Double).self) {
                peers.append(PresencePeer(name: name, address: address, lastSeen: age))
            }
            return peers
        }
    }

    func leave() async throws {
        try await store.run("leaving") { [self] in
            try await store.client.query("DELETE FROM presence_node WHERE name = \(name)")
        }
    }
}

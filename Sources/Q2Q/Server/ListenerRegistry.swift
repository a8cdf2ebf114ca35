import AMP
import Foundation
import Locking

/// Who listens for what on a presence server: per (address, service), the connections
/// of the nodes listening, with the certificate each proved. A registration lasts
/// `lifetime` unless renewed by another `listen`, and ends with its connection; expired
/// ones are purged (``purge(now:)``) even if nobody asks for them.
final class ListenerRegistry: Sendable {
    struct Key: Hashable {
        var address: Q2QAddress
        var service: String
    }

    struct Registration: Sendable {
        let connection: AMPConnection
        let certificate: Q2QCertificate
        var description: String
        var expires: Date
        /// The `tcp@` paths it registered (`direct-paths`).
        var direct: [HostPort] = []
    }

    /// Why a `listen` was refused.
    enum Refusal: Error {
        case tooManyServices(limit: Int)
        case tooManyConnections(limit: Int)
    }

    private struct State {
        var entries: [Key: [ObjectIdentifier: Registration]] = [:]
        /// The keys each connection registered: closing it touches only those.
        var byConnection: [ObjectIdentifier: Set<Key>] = [:]
        /// The connections listening as each address.
        var connectionsPerAddress: [Q2QAddress: Set<ObjectIdentifier>] = [:]
    }

    let lifetime: TimeInterval
    let maximumServicesPerConnection: Int
    let maximumConnectionsPerAddress: Int
    private let state = Locked(State())

    init(lifetime: TimeInterval, maximumServicesPerConnection: Int = 16, maximumConnectionsPerAddress: Int = 16) {
        self.lifetime = lifetime
        self.maximumServicesPerConnection = maximumServicesPerConnection
        self.maximumConnectionsPerAddress = maximumConnectionsPerAddress
    }

    /// Registers or renews; `true` when this connection had no registration before.
    /// Throws when the connection would hold more services, or the address more
    /// listening connections, than allowed.
    @discardableResult
    func register(_ address: Q2QAddress, services: [String], connection: AMPConnection,
                  certificate: Q2QCertificate, description: String, direct: [HostPort] = [], now: Date) throws(Refusal) -> Bool {
        let id = ObjectIdentifier(connection)
        return try state.withLock { state throws(Refusal) in
            let existing = state.byConnection[id] ?? []
            let keys = Set(services.map { Key(address: address, service: $0) })
            guard existing.union(keys).count <= maximumServicesPerConnection else {
                throw .tooManyServices(limit: maximumServicesPerConnection)
            }
            let connections = state.connectionsPerAddress[address] ?? []
            guard connections.contains(id) || connections.count < maximumConnectionsPerAddress else {
                throw .tooManyConnections(limit: maximumConnectionsPerAddress)
            }
            for key in keys {
                state.entries[key, default: [:]][id] =
                    Registration(connection: connection, certificate: certificate, description: description,
                                 expires: now + lifetime, direct: direct)
            }
            state.byConnection[id] = existing.union(keys)
            state.connectionsPerAddress[address, default: []].insert(id)
            return existing.isEmpty
        }
    }

    /// The live registrations for `address`'s `service`.
    func listeners(of address: Q2QAddress, service: String, now: Date) -> [Registration] {
        state.withLock { state in
            let key = Key(address: address, service: service)
            guard let registrations = state.entries[key] else { return [] }
            return registrations.values.filter { $0.expires > now }
        }
    }

    /// Drops every registration that has expired.
    func purge(now: Date) {
        state.withLock { state in
            for (key, registrations) in state.entries {
                for (id, registration) in registrations where registration.expires <= now {
                    Self.drop(key, id, &state)
                }
            }
        }
    }

    /// Drops every registration of a closed connection.
    func remove(_ connection: AMPConnection) {
        let id = ObjectIdentifier(connection)
        state.withLock { state in
            for key in state.byConnection[id] ?? [] { Self.drop(key, id, &state) }
        }
    }

    private static func drop(_ key: Key, _ id: ObjectIdentifier, _ state: inout State) {
        state.entries[key]?[id] = nil
        if state.entries[key]?.isEmpty == true { state.entries[key] = nil }
        state.byConnection[id]?.remove(key)
        if state.byConnection[id]?.isEmpty == true {
            state.byConnection[id] = nil
            state.connectionsPerAddress[key.address]?.remove(id)
            if state.connectionsPerAddress[key.address]?.isEmpty == true { state.connectionsPerAddress[key.address] = nil }
        }
    }

    /// How many registrations are stored, expired or not.
    var storedCount: Int { state.withLock { $0.entries.values.reduce(0) { $0 + $1.count } } }

    /// How many (address, service, connection) registrations are live.
    var count: Int {
        let now = Date()
        return state.withLock { $0.entries.values.reduce(0) { $0 + $1.values.filter { $0.expires > now }.count } }
    }
}

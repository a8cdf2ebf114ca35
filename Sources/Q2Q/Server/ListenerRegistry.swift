import AMP
import Foundation
import Synchronization

/// Who listens for what on a presence server: per (address, service), the connections
/// of the nodes listening, with the certificate each proved. A registration lasts
/// `lifetime` unless renewed by another `listen`, and ends with its connection.
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

    let lifetime: TimeInterval
    private let entries = Mutex<[Key: [ObjectIdentifier: Registration]]>([:])

    init(lifetime: TimeInterval) {
        self.lifetime = lifetime
    }

    /// Registers or renews; `true` when this connection had no registration before.
    @discardableResult
    func register(_ address: Q2QAddress, services: [String], connection: AMPConnection,
                  certificate: Q2QCertificate, description: String, direct: [HostPort] = [], now: Date) -> Bool {
        let id = ObjectIdentifier(connection)
        return entries.withLock { entries in
            let isNew = !entries.values.contains { $0[id] != nil }
            for service in services {
                entries[Key(address: address, service: service), default: [:]][id] =
                    Registration(connection: connection, certificate: certificate, description: description,
                                 expires: now + lifetime, direct: direct)
            }
            return isNew
        }
    }

    /// The live registrations for `address`'s `service`.
    func listeners(of address: Q2QAddress, service: String, now: Date) -> [Registration] {
        entries.withLock { entries in
            let key = Key(address: address, service: service)
            entries[key] = entries[key]?.filter { $0.value.expires > now }
            if entries[key]?.isEmpty == true { entries[key] = nil }
            return entries[key].map { Array($0.values) } ?? []
        }
    }

    /// Drops every registration of a closed connection.
    func remove(_ connection: AMPConnection) {
        let id = ObjectIdentifier(connection)
        entries.withLock { entries in
            for key in Array(entries.keys) {
                entries[key]?[id] = nil
                if entries[key]?.isEmpty == true { entries[key] = nil }
            }
        }
    }

    /// How many (address, service, connection) registrations are live.
    var count: Int {
        let now = Date()
        return entries.withLock { $0.values.reduce(0) { $0 + $1.values.filter { $0.expires > now }.count } }
    }
}

import Foundation
import PostgresNIO

/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require]`, or a
/// Unix socket directory as libpq takes it: `postgres://USER@/DATABASE?host=/run/postgresql`.
public struct DatabaseURL: Sendable, CustomStringConvertible {
    public var configuration: PostgresClient.Configuration
    /// Where it points, without the password (for messages).
    public var description: String

    public init(_ text: String) throws(DatabaseURLError) {
        guard let components = URLComponents(string: text), ["postgres", "postgresql"].contains(components.scheme ?? "") else {
            throw DatabaseURLError("the database must be postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        guard let user = components.user, !user.isEmpty else { throw DatabaseURLError("the database URL names no user") }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty else { throw DatabaseURLError("the database URL names no database (…/DATABASE)") }
        let query = Dictionary(components.queryItems?.map { ($0.name, $0.value ?? "") } ?? [], uniquingKeysWith: { $1 })
        let password = components.password?.removingPercentEncoding
        if let socketDirectory = query["host"], socketDirectory.hasPrefix("/") {
            let port = components.port ?? 5432
            configuration = .init(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)", username: user, password: password,
                                  database: database)
            description = "postgres://\(user)@/\(database)?host=\(socketDirectory)"
        } else {
            guard let host = components.host, !host.isEmpty else { throw DatabaseURLError("the database URL names no host") }
            let tls: PostgresClient.Configuration.TLS
            switch query["sslmode"] ?? "prefer" {
            case "disable": tls = .disable
            case "prefer": tls = .prefer(.makeClientConfiguration())
            case "require", "verify-full": tls = .require(.makeClientConfiguration())
            case let other: throw DatabaseURLError("sslmode '\(other)' is not one of disable, prefer, require")
            }
            let port = components.port ?? 5432
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
            description = "postgres://\(user)@\(host):\(port)/\(database)"
        }
        configuration.options.connectTimeout = .seconds(5)
    }
}

public struct DatabaseURLError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

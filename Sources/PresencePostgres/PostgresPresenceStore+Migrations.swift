import Logging
import PostgresNIO

extension PostgresPresenceStore {
    /// The schema, in order; each applied once, in a transaction, under an advisory lock
    /// so that nodes starting at once do not apply one twice.
    static let migrations: [(name: String, statements: [PostgresQuery])] = [
        ("v1: authorities, users, certificates, pins", [
            "CREATE TABLE authority (domain text PRIMARY KEY, sealed_key bytea NOT NULL, certificate bytea NOT NULL)",
            """
            CREATE TABLE users (domain text NOT NULL, resource text NOT NULL, password_hash text NOT NULL, created bigint NOT NULL,
                                PRIMARY KEY (domain, resource))
            """,
            """
            CREATE TABLE certificate (serial text PRIMARY KEY, domain text NOT NULL, resource text NOT NULL, issued bigint NOT NULL,
                                      not_valid_after bigint NOT NULL, revoked boolean NOT NULL DEFAULT FALSE, der bytea NOT NULL)
            """,
            "CREATE INDEX certificate_by_address ON certificate (domain, resource)",
            "CREATE TABLE pin (domain text PRIMARY KEY, certificate bytea NOT NULL, pinned bigint NOT NULL)",
        ]),
        ("v2: presence nodes", [
            "CREATE TABLE presence_node (name text PRIMARY KEY, address text NOT NULL, heartbeat timestamptz NOT NULL)",
        ]),
    ]

    /// An arbitrary number all nodes agree on: the advisory lock of migrations.
    static let migrationLock: Int64 = 0x7665_7274_6578

    func migrate() async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS vertex_migrations (name text PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<String>()
            for try await name in try await connection.query("SELECT name FROM vertex_migrations", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            for migration in Self.migrations where !applied.contains(migration.name) {
                for statement in migration.statements {
                    try await connection.query(statement, logger: logger)
                }
                try await connection.query("INSERT INTO vertex_migrations (name) VALUES (\(migration.name))", logger: logger)
                logger.notice("applied database migration", metadata: ["migration": "\(migration.name)"])
            }
        }
    }

    /// The migrations applied, sorted.
    public func appliedMigrations() async throws -> [String] {
        var names: [String] = []
        for try await name in try await client.query("SELECT name FROM vertex_migrations ORDER BY name").decode(String.self) {
            names.append(name)
        }
        return names
    }
}

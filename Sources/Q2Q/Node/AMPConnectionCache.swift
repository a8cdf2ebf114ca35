import AMP
import NIOCore

/// One AMP connection per (local address, peer, service), over a Q2Q path: opened on
/// first use, shared by every caller, opened again once it has dropped, and closed
/// after ``idleTimeout`` with nobody holding it (the original's `conncache`).
///
/// Connections a peer opened to one of our AMP listeners are cached too, under the
/// same key seen from our side: calls back to that peer use them instead of dialling
/// (which also reaches a peer behind a NAT that let only its own connection through).
actor AMPConnectionCache {
    struct Key: Hashable, Sendable {
        var local: Q2QAddress
        var peer: Q2QAddress
        var service: String
    }

    private struct Entry {
        var connection: Task<AMPConnection, any Error>
        /// Callers inside ``withConnection``: the entry is not idle while any is.
        var holders = 0
        var lastUsed = ContinuousClock.now
    }

    let idleTimeout: Duration
    private var entries: [Key: Entry] = [:]
    private var sweeper: Task<Void, Never>?

    init(idleTimeout: Duration) {
        self.idleTimeout = idleTimeout
    }

    /// The cached connection for `key`, as ``connection(for:open:)``, held (not idle)
    /// until ``release(_:_:)``.
    func hold(_ key: Key, open: @escaping @Sendable () async throws -> AMPConnection) async throws -> AMPConnection {
        let connection = try await connection(for: key, open: open)
        entries[key]?.holders += 1
        return connection
    }

    /// The cached connection for `key` (made by `open` when needed), marked used now.
    func connection(for key: Key, open: @escaping @Sendable () async throws -> AMPConnection) async throws -> AMPConnection {
        startSweeping()
        if let existing = entries[key] {
            if let connection = try? await existing.connection.value, connection.channel.isActive {
                entries[key]?.lastUsed = .now
                return connection
            }
            if entries[key]?.connection == existing.connection { entries[key] = nil }
        }
        // Another caller may have started opening it while we waited.
        if let current = entries[key] { return try await current.connection.value }
        let task = Task { try await open() }
        // Held while it opens: a slow race must not look idle to the sweeper.
        entries[key] = Entry(connection: task, holders: 1)
        do {
            let connection = try await task.value
            if entries[key]?.connection == task {
                entries[key]?.holders -= 1
                entries[key]?.lastUsed = .now
            }
            forgetWhenClosed(key, connection)
            return connection
        } catch {
            if entries[key]?.connection == task { entries[key] = nil }
            throw error
        }
    }

    /// A connection a peer opened to us: cached unless a live one is already.
    func adopt(_ connection: AMPConnection, as key: Key) async {
        if let existing = entries[key], let current = try? await existing.connection.value, current.channel.isActive {
            return
        }
        startSweeping()
        entries[key] = Entry(connection: Task { connection })
        forgetWhenClosed(key, connection)
    }

    /// The connections cached now (for tests and status).
    var count: Int { entries.count }

    func closeAll() async {
        sweeper?.cancel()
        sweeper = nil
        let all = entries.values
        entries = [:]
        for entry in all { await (try? await entry.connection.value)?.close() }
    }

    /// Ends a ``hold(_:open:)``; the connection's idle time starts when its last holder leaves.
    func release(_ key: Key, _ connection: AMPConnection) async {
        guard let task = entries[key]?.connection, (try? await task.value) === connection,
              entries[key]?.connection == task, var entry = entries[key] else { return }
        entry.holders = max(0, entry.holders - 1)
        entry.lastUsed = .now
        entries[key] = entry
    }

    private func forgetWhenClosed(_ key: Key, _ connection: AMPConnection) {
        connection.channel.closeFuture.whenComplete { [weak self] _ in
            guard let self else { return }
            Task { await self.forget(key, ifStill: connection) }
        }
    }

    private func forget(_ key: Key, ifStill connection: AMPConnection) async {
        guard let entry = entries[key], let current = try? await entry.connection.value, current === connection else { return }
        entries[key] = nil
    }

    /// Closes connections idle for ``idleTimeout``, checking a few times per period.
    private func startSweeping() {
        guard sweeper == nil else { return }
        let period = idleTimeout / 4
        sweeper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                guard let self else { return }
                await self.closeIdle(now: .now)
            }
        }
    }

    func closeIdle(now: ContinuousClock.Instant) async {
        let idle = entries.filter { $0.value.holders == 0 && now - $0.value.lastUsed >= idleTimeout }
        for (key, entry) in idle {
            entries[key] = nil
            await (try? await entry.connection.value)?.close()
        }
    }
}

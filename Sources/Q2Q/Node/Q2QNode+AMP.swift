import AMP

/// AMP between Q2Q addresses: a listener whose callers speak AMP, and a cache of one
/// AMP connection per (from, to, service) that every caller shares (the original's
/// `Q2QService.sendMessage` over `conncache`).
///
/// ```swift
/// // bob answers Sum on "calc"; alice calls it over whichever path wins
/// _ = try await bobsNode.serveAMP(as: bob, service: "calc") { caller in responders }
/// let sum = try await alicesNode.call(from: alice, to: bob, service: "calc", Sum.self, .init(values: [1, 2]))
/// ```
extension Q2QNode {
    /// Listens as `address` for `service` and speaks AMP with each caller that
    /// `authorize` accepts, answering with the responders `responders` makes for that
    /// caller's verified address. The same responders answer on connections this node
    /// opens as `address` to `service` (AMP calls go both ways), and callers'
    /// connections join the cache, so calling a caller back reuses its connection.
    public func serveAMP(as address: Q2QAddress, service: String, description: String = "",
                         authorize: (@Sendable (Q2QAddress) async -> Bool)? = nil,
                         responders: @escaping @Sendable (_ peer: Q2QAddress) -> AMPResponders) async throws -> Q2QListener {
        ampResponders.withLock { $0[ListenerKey(address: address, service: service)] = responders }
        let cache = ampConnections
        do {
            return try await listen(as: address, service: service, description: description, authorize: authorize,
                                    adoption: .amp(responders: responders)) { path in
                let key = AMPConnectionCache.Key(local: path.local, peer: path.peer, service: path.service)
                Task { await cache.adopt(path.amp, as: key) }
            }
        } catch {
            ampResponders.withLock { $0[ListenerKey(address: address, service: service)] = nil }
            throw error
        }
    }

    /// Runs `body` with the AMP connection from `from` to `to`'s `service`: the cached
    /// one, or a new one (``connect(from:to:service:methods:)``'s race) when there is
    /// none or it has dropped. The connection stays open while `body` runs and for
    /// ``Q2QNodeConfiguration/ampIdleTimeout`` after its last use.
    public func withAMPConnection<T: Sendable>(from: Q2QAddress, to: Q2QAddress, service: String,
                                               methods: Q2QMethodPolicy = .auto,
                                               _ body: (AMPConnection) async throws -> T) async throws -> T {
        let key = AMPConnectionCache.Key(local: from, peer: to, service: service)
        let connection = try await ampConnections.hold(key, open: openAMP(from: from, to: to, service: service, methods: methods))
        do {
            let result = try await body(connection)
            await ampConnections.release(key, connection)
            return result
        } catch {
            await ampConnections.release(key, connection)
            throw error
        }
    }

    /// The cached AMP connection from `from` to `to`'s `service` (see
    /// ``withAMPConnection(from:to:service:methods:_:)``), marked used now.
    public func ampConnection(from: Q2QAddress, to: Q2QAddress, service: String,
                              methods: Q2QMethodPolicy = .auto) async throws -> AMPConnection {
        try await ampConnections.connection(for: AMPConnectionCache.Key(local: from, peer: to, service: service),
                                            open: openAMP(from: from, to: to, service: service, methods: methods))
    }

    /// Calls `command` on `to`'s `service` over the cached connection (the original's
    /// `sendMessage`). A call that fails because the connection dropped is not retried:
    /// the command may have run; the next call opens a new connection.
    public func call<Command: AMPCommand>(from: Q2QAddress, to: Q2QAddress, service: String, methods: Q2QMethodPolicy = .auto,
                                          _ command: Command.Type, _ arguments: Command.Arguments) async throws -> Command.Response
    where Command.Response: Sendable {
        try await withAMPConnection(from: from, to: to, service: service, methods: methods) {
            try await $0.call(command, arguments)
        }
    }

    /// How a cache miss opens a connection: the race of every method, the path adopted
    /// as AMP with the responders `serveAMP` registered for (from, service), if any.
    private func openAMP(from: Q2QAddress, to: Q2QAddress, service: String,
                         methods: Q2QMethodPolicy) -> @Sendable () async throws -> AMPConnection {
        let registered = ampResponders.withLock { $0[ListenerKey(address: from, service: service)] }
        let responders: @Sendable (Q2QAddress) -> AMPResponders = registered ?? { _ in AMPResponders() }
        return { [self] in
            try await connectPath(from: from, to: to, service: service, methods: methods,
                                  adoption: .amp(responders: responders)).amp
        }
    }
}

import Foundation
import Locking
import Logging
import Q2Q
import VertexApps

/// What `vertex app` runs with.
public struct VertexAppConfiguration: Sendable {
    /// The identities to receive for; nil: every identity in the home, and each one
    /// signed in through the page.
    public var addresses: [Q2QAddress]?
    /// Where received files go.
    public var downloads: URL
    /// Where files the browser uploads wait until they are sent (emptied at start).
    public var uploads: URL
    /// How long an incoming transfer waits for the user before it is refused.
    public var promptTimeout: Duration
    /// Whether offered paths may have hidden components (as `vertex receive --allow-hidden`).
    public var allowHidden: Bool
    /// Transfers received at once; more senders are turned away until one ends.
    public var concurrentReceives: Int
    /// How often contacts' reachability and our own registrations are checked.
    public var refreshInterval: Duration

    public init(addresses: [Q2QAddress]? = nil, downloads: URL, uploads: URL, promptTimeout: Duration = .seconds(60),
                allowHidden: Bool = false, concurrentReceives: Int = 4, refreshInterval: Duration = .seconds(15)) {
        self.addresses = addresses
        self.downloads = downloads
        self.uploads = uploads
        self.promptTimeout = promptTimeout
        self.allowHidden = allowHidden
        self.concurrentReceives = concurrentReceives
        self.refreshInterval = refreshInterval
    }
}

/// A failure of something the page asked for, worded for the person using it.
public struct VertexAppError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case badRequest, notFound, failed }
    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// The app behind the page: a node that receives files for the user's identities, and
/// every action the page offers (sign in, contacts, answering prompts, sending), built
/// on the same library calls as the CLI (`PresenceClient.register`, `FileReceiver`,
/// `FileSender`). Its state is read as one ``AppSnapshot``; every change is announced
/// through `changes`.
public final class VertexApp: Sendable {
    public let configuration: VertexAppConfiguration
    let store: SQLiteNodeStore
    let node: Q2QNode
    let logger: Logger
    let changes = ChangeSignal()
    let state = Locked(AppState())

    /// Finished transfers kept on the page, and connections and errors listed.
    static let keptTransfers = 50
    static let keptConnections = 20
    static let keptErrors = 10

    public init(store: SQLiteNodeStore, node: Q2QNode, configuration: VertexAppConfiguration,
                logger: Logger = Logger(label: "vertex.app")) {
        self.store = store
        self.node = node
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts receiving for every identity the configuration names and the checks of
    /// reachability; empties the upload area.
    public func start() async throws {
        try? FileManager.default.removeItem(at: configuration.uploads)
        try FileManager.default.createDirectory(at: configuration.uploads, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: configuration.downloads, withIntermediateDirectories: true)
        for identity in try await ourIdentities() {
            await startReceiving(as: identity.address)
        }
        let refresher = Task { [self] in
            while !Task.isCancelled {
                await refreshReachability()
                try? await Task.sleep(for: configuration.refreshInterval)
            }
        }
        state.withLock { $0.tasks.append(refresher) }
    }

    /// Stops receiving, refuses every open prompt, ends the node.
    public func stop() async {
        let (listeners, tasks, prompts) = state.withLock { state in
            state.stopped = true
            defer {
                state.listeners.removeAll()
                state.tasks.removeAll()
                state.prompts.removeAll()
            }
            return (Array(state.listeners.values), state.tasks, Array(state.prompts.values))
        }
        for prompt in prompts { prompt.continuation.resume(returning: .refuse) }
        for task in tasks { task.cancel() }
        for listener in listeners { await listener.close() }
        await node.shutdown()
        changes.changed()
    }

    /// Ends every page's event stream (the web server waits for its requests to end).
    public func closeEventStreams() {
        state.withLock { $0.eventStreamsClosed = true }
        changes.changed()
    }

    var eventStreamsOpen: Bool { state.withLock { !$0.eventStreamsClosed && !$0.stopped } }

    /// The identities in the home this app serves.
    func ourIdentities() async throws -> [Q2QIdentity] {
        let all = try await store.identities()
        guard let chosen = configuration.addresses else { return all }
        return all.filter { chosen.contains($0.address) }
    }

    /// Records a failure the user should see (the page lists the newest few).
    func note(_ error: String) {
        logger.notice("\(error)")
        state.withLock { state in
            state.errors.append(error)
            if state.errors.count > Self.keptErrors { state.errors.removeFirst(state.errors.count - Self.keptErrors) }
        }
        changes.changed()
    }

    func noteConnection(_ stream: Q2QStream, incoming: Bool) {
        let record = AppSnapshot.Connection(direction: incoming ? "in" : "out", local: stream.local.description,
                                            peer: stream.peer.description, method: stream.method.description, time: Date())
        state.withLock { state in
            state.connections.append(record)
            if state.connections.count > Self.keptConnections {
                state.connections.removeFirst(state.connections.count - Self.keptConnections)
            }
        }
    }

    /// 128 random bits in hex: ids of prompts, transfers and uploads, not guessable by
    /// anyone who sees another.
    static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in
            let byte = UInt8.random(in: .min ... .max, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }
}

/// What the app holds in memory (the rest is in the home database).
struct AppState {
    var listeners: [Q2QAddress: Q2QListener] = [:]
    /// Addresses whose listener is being started.
    var starting: Set<Q2QAddress> = []
    var listenProblems: [Q2QAddress: String] = [:]
    /// Our presence servers' answer to "are we registered?", per identity.
    var registered: [Q2QAddress: Bool] = [:]
    /// Whether each contact listens for files now.
    var reachable: [Q2QAddress: Bool] = [:]
    var prompts: [String: PendingPrompt] = [:]
    var transfers: [TransferRecord] = []
    var connections: [AppSnapshot.Connection] = []
    var errors: [String] = []
    /// Uploads waiting to be sent, by id.
    var uploads: [String: PendingUpload] = [:]
    var receiving = 0
    var tasks: [Task<Void, Never>] = []
    var stopped = false
    /// The web server is stopping: event streams end, so that it can.
    var eventStreamsClosed = false
}

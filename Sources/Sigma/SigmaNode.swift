import AMP
import Foundation
import Locking
import Logging
import Q2Q
import VertexApps

/// Sigma on one Q2Q address: listens for `sigma`, holds the swarms of the shares it
/// seeds or downloads, and talks to peers over the node's connection cache (one AMP
/// connection per peer, whatever the number of shares).
///
/// ```swift
/// let sigma = try await SigmaNode.start(node: node, as: alice)
/// let swarm = try await sigma.share(URL(fileURLWithPath: "film.mkv"), access: ShareAccess(isPublic: true))
/// print(await swarm.link)          // give this to bob, whose node runs sigma.fetch(link, into: dir)
/// ```
public final class SigmaNode: Sendable {
    public let address: Q2QAddress
    let context: SwarmContext
    let swarms = Locked<[ShareID: SigmaSwarm]>([:])
    private let listener = Locked<Q2QListener?>(nil)
    private let receiving: Receiving?
    /// Shares pushed to us and accepted (``Receiving``), as their downloads start.
    public let pushes: AsyncStream<PushEvent>
    private let pushContinuation: AsyncStream<PushEvent>.Continuation

    /// Whether and where this node takes pushed shares.
    public struct Receiving: Sendable {
        /// Where accepted shares are downloaded.
        public var directory: URL
        /// Whether a pusher is accepted (as ``vertex authorize`` says).
        public var authorize: @Sendable (Q2QAddress) async -> Bool

        public init(directory: URL, authorize: @escaping @Sendable (Q2QAddress) async -> Bool) {
            self.directory = directory
            self.authorize = authorize
        }
    }

    /// What became of a push.
    public enum PushEvent: Sendable {
        case started(SigmaSwarm, from: Q2QAddress)
        case failed(ShareLink, from: Q2QAddress, ShareError)
    }

    private init(context: SwarmContext, receiving: Receiving?) {
        self.address = context.address
        self.context = context
        self.receiving = receiving
        (pushes, pushContinuation) = AsyncStream.makeStream(of: PushEvent.self)
    }

    /// Starts Sigma as `address` on `node`: listens for `sigma` (peers fetch from us and
    /// push to us there). `uploadRate` caps everything this node uploads, in bytes per
    /// second. With `receiving`, pushes from authorized senders are downloaded.
    public static func start(node: Q2QNode, as address: Q2QAddress, uploadRate: Int? = nil, receiving: Receiving? = nil,
                             logger: Logger = Logger(label: "vertex.sigma")) async throws -> SigmaNode {
        let sigma = SigmaNode(context: SwarmContext(node: node, address: address, uploadRate: uploadRate, logger: logger),
                              receiving: receiving)
        let listener = try await node.serveAMP(as: address, service: Sigma.service, description: "sigma") { [weak sigma] peer in
            sigma?.responders(for: peer) ?? AMPResponders()
        }
        sigma.listener.withLock { $0 = listener }
        return sigma
    }

    /// Leaves every swarm and stops listening.
    public func shutdown() async {
        let all = swarms.withLock { swarms in
            defer { swarms = [:] }
            return Array(swarms.values)
        }
        for swarm in all { await swarm.close() }
        await listener.withLock { $0 }?.close()
        pushContinuation.finish()
    }

    func swarm(_ id: String) -> SigmaSwarm? {
        guard let id = ShareID(hex: id) else { return nil }
        return swarms.withLock { $0[id] }
    }

    func register(_ swarm: SigmaSwarm) throws(ShareError) {
        let added = swarms.withLock { swarms in
            guard swarms[swarm.id] == nil else { return false }
            swarms[swarm.id] = swarm
            return true
        }
        guard added else { throw .io("this node already has share \(swarm.id)") }
    }

    /// Leaves one swarm.
    public func remove(_ swarm: SigmaSwarm) async {
        swarms.withLock { _ = $0.removeValue(forKey: swarm.id) }
        await swarm.close()
    }

    // MARK: Sharing

    /// Shares a file or a directory in place: hashes it (`progress` is told of the
    /// bytes hashed and the total), then serves it to whoever `access` admits.
    public func share(_ url: URL, access: ShareAccess,
                      progress: @escaping @Sendable (Int64, Int64) -> Void = { _, _ in }) async throws(ShareError) -> SigmaSwarm {
        let selection: FileSelection
        do {
            selection = try FileSelection([url])
        } catch {
            throw .io("\(error)")
        }
        let isDirectory = ReceiveDirectory.kind(of: url.standardizedFileURL.resolvingSymlinksInPath()) == .directory
        let name = url.standardizedFileURL.lastPathComponent
        let sizes = try selection.entries.map { entry throws(ShareError) in try Self.size(of: entry.url) }
        let layout = PieceLayout(sizes: sizes)
        let total = sizes.reduce(0, +)
        var files: [ShareManifest.File] = []
        var layers: [String: [MerkleTree.Hash]] = [:]
        var done: Int64 = 0
        for entry in selection.entries {
            let base = done
            let hashes = try ShareHasher.hash(entry.url, pieceLength: layout.pieceLength) { progress(base + $0, total) }
            done += hashes.size
            files.append(.init(path: entry.name, size: hashes.size, root: hashes.root))
            layers[entry.name] = hashes.pieceLayer
        }
        let manifest = try ShareManifest(kind: isDirectory ? .directory : .file, name: name, files: files)
        // The manifest's order is canonical; the files are opened in that order.
        let urls = Dictionary(uniqueKeysWithValues: selection.entries.map { ($0.name, $0.url) })
        let verifier = PieceVerifier(manifest: manifest, layout: PieceLayout(manifest),
                                     layers: manifest.files.map { layers[$0.path] ?? [] })
        let shareFiles = try ShareFiles(reading: manifest.files.map { urls[$0.path]! }, layout: verifier.layout)
        let swarm = SigmaSwarm(verifier: verifier, files: shareFiles, have: BitArray(count: verifier.layout.pieceCount, filled: true),
                               resumed: 0, partial: nil, location: url, access: access, context: context)
        try register(swarm)
        await swarm.start(joining: [])
        return swarm
    }

    private static func size(of url: URL) throws(ShareError) -> Int64 {
        var status = stat()
        guard stat(url.path, &status) == 0 else { throw .io("cannot read \(url.path): \(String(cString: strerror(errno)))") }
        return Int64(status.st_size)
    }

    /// The link that lets someone fetch `swarm`'s share from us.
    public func link(for swarm: SigmaSwarm) -> ShareLink {
        ShareLink(swarm.manifest, holders: [address])
    }

    // MARK: Pushing

    /// Offers `swarm`'s share to `receivers` (`Put`): each that authorized us fetches it
    /// from us and from the others. Returns each receiver's refusal, if any.
    public func push(_ swarm: SigmaSwarm, to receivers: [Q2QAddress]) async -> [Q2QAddress: String] {
        await swarm.allow(receivers)
        let manifest = swarm.manifest
        return await withTaskGroup(of: (Q2QAddress, String?).self) { group in
            for receiver in receivers {
                group.addTask { [context] in
                    do {
                        let connection = try await context.connection(to: receiver)
                        _ = try await connection.call(PutShare.self, .init(share: manifest.id.description, kind: manifest.kind.rawValue,
                                                                           name: manifest.name, size: Int(manifest.totalSize),
                                                                           peers: receivers.filter { $0 != receiver }))
                        return (receiver, nil)
                    } catch let error as SigmaError {
                        return (receiver, error.errorDescription)
                    } catch {
                        return (receiver, "\(error)")
                    }
                }
            }
            var refusals: [Q2QAddress: String] = [:]
            for await (receiver, refusal) in group { if let refusal { refusals[receiver] = refusal } }
            return refusals
        }
    }

    /// `Put` from `peer`: accepted from senders the receiving policy authorizes; the
    /// download starts at once and is announced on ``pushes``.
    func answerPut(_ arguments: PutShare.Arguments, from peer: Q2QAddress) async throws(SigmaError) -> AMPEmpty {
        guard let receiving else { throw .notAllowed("\(address) does not take pushed shares") }
        guard await receiving.authorize(peer) else {
            throw .notAllowed("\(address) does not take shares from \(peer) (they can run: vertex authorize \(address) \(peer))")
        }
        guard let id = ShareID(hex: arguments.share), let kind = ShareManifest.Kind(rawValue: arguments.kind),
              arguments.size >= 0, Int64(arguments.size) <= ShareManifest.maximumFileSize else {
            throw .badRequest("malformed Put")
        }
        do {
            try ShareManifest.checkName(arguments.name)
        } catch {
            throw .badRequest("\(error)")
        }
        let others = Array((arguments.peers ?? []).prefix(SigmaSwarm.maximumPeers))
        if let existing = swarms.withLock({ $0[id] }) {
            await existing.learn(of: peer)
            return AMPEmpty()
        }
        let link = ShareLink(id: id, kind: kind, name: arguments.name, size: Int64(arguments.size), holders: [peer] + others)
        Task { () async in
            do throws(ShareError) {
                let swarm = try await fetch(link, into: receiving.directory, access: ShareAccess(allowed: Set([peer] + others)))
                pushContinuation.yield(.started(swarm, from: peer))
            } catch {
                pushContinuation.yield(.failed(link, from: peer, error))
            }
        }
        return AMPEmpty()
    }
}

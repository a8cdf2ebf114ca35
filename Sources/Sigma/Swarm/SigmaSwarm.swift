import AMP
import Foundation
import Logging
import NIOCore
import Q2Q

/// One share's swarm on this node: the peers that hold or want it, what each holds,
/// our pieces, and the requests both ways.
///
/// Downloading asks each peer for pieces rarest first (``PiecePicker``), keeping enough
/// requests in flight to fill the link; a peer that holds the whole share is asked for
/// pieces of its choosing instead (`Request -1`), and spreads what it uploads over the
/// pieces it has sent least. Each piece is checked against the share's hash tree before
/// it is written as held. Uploading serves each requester's queue, all of them sharing
/// the node's upload cap block by block.
public actor SigmaSwarm {
    public nonisolated let manifest: ShareManifest
    public nonisolated let id: ShareID
    let layout: PieceLayout
    let files: ShareFiles
    let context: SwarmContext
    /// The download's directory, or nil when we hold the share in place (a seeder).
    let partial: PartialDownload?

    var picker: PiecePicker
    let verifier: PieceVerifier
    var layers: [[MerkleTree.Hash]] { verifier.layers }
    var access: ShareAccess
    /// Addresses an allowed peer introduced: they may fetch too.
    var introduced: Set<Q2QAddress> = []
    var peers: [Q2QAddress: SwarmPeer] = [:]
    var banned: Set<Q2QAddress> = []
    /// Holders we were told of: joined when we can, again after they drop.
    var known: Set<Q2QAddress> = []

    /// Pieces being received, by (piece, sender).
    var assemblies: [AssemblyKey: PieceAssembly] = [:]
    /// How often we uploaded each piece (to spread our choices on -1 requests).
    var uploadCount: [UInt16]
    /// Pieces verified since the last `Have`.
    var pendingHaves: [Int] = []
    var haveDirty = false

    var statistics: SwarmStatistics
    /// Where the finished share is (set once complete).
    public internal(set) var location: URL?
    var completionWaiters: [CheckedContinuation<URL, any Error>] = []
    var failure: ShareError?
    var timers: Task<Void, Never>?
    var closed = false
    /// Whether ``complete()`` is moving the share into place.
    var finishing = false

    /// Most peers per swarm.
    static let maximumPeers = 128
    /// Failed pieces (or gross violations) after which a peer is dropped for this share.
    static let maximumFailures = 3
    /// Unrequested `Data` blocks and other violations tolerated from a peer.
    static let maximumViolations = 32
    /// Most requests a peer may have queued with us.
    static let maximumQueuedRequests = 512
    /// A request unanswered this long is asked elsewhere.
    static let requestTimeout: Duration = .seconds(30)

    /// The swarm runs on one of the node's event loops: a command arriving on a
    /// connection of that loop reaches the swarm without a thread switch (two per `Data`
    /// block otherwise, which were a tenth of a downloader's CPU).
    nonisolated let eventLoop: any EventLoop
    public nonisolated var unownedExecutor: UnownedSerialExecutor { eventLoop.executor.asUnownedSerialExecutor() }

    init(verifier: PieceVerifier, files: ShareFiles, have: BitArray, resumed: Int, partial: PartialDownload?,
         location: URL? = nil, access: ShareAccess, context: SwarmContext) {
        let manifest = verifier.manifest
        self.manifest = manifest
        self.id = manifest.id
        self.layout = files.layout
        self.files = files
        self.verifier = verifier
        self.location = location
        self.partial = partial
        self.access = access
        self.context = context
        self.eventLoop = context.node.eventLoopGroup.next()
        var random = SystemRandomNumberGenerator()
        picker = PiecePicker(have: have, random: &random)
        uploadCount = [UInt16](repeating: 0, count: have.count)
        let held = have.setIndices.reduce(Int64(0)) { $0 + Int64(files.layout.extent(of: $1).length) }
        statistics = SwarmStatistics(pieces: have.count, piecesHeld: have.setCount, piecesResumed: resumed,
                                     bytesTotal: manifest.totalSize, bytesHeld: held, bytesDownloaded: 0, bytesUploaded: 0,
                                     piecesRejected: 0, peers: 0, peersComplete: 0, peersBanned: 0)
    }

    /// Starts the swarm's timers; when downloading, joins `holders`.
    func start(joining holders: [Q2QAddress]) {
        timers = Task { [weak self] in
            var tick = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(20))
                guard let self else { return }
                tick += 1
                await self.onTimer(tick: tick)
            }
        }
        for holder in holders { learn(of: holder) }
        if picker.isComplete, partial != nil { Task { await complete() } }
    }

    public var isComplete: Bool { picker.isComplete }

    public var currentStatistics: SwarmStatistics {
        var statistics = statistics
        statistics.peers = peers.values.filter(\.joined).count
        statistics.peersComplete = peers.values.filter { $0.joined && $0.mask.isComplete }.count
        statistics.peersBanned = banned.count
        return statistics
    }

    /// Whether every piece is held by some peer other than us (a seeder may then leave).
    public var isDistributed: Bool { picker.everyPieceElsewhere }

    /// Whether each of `addresses` holds the whole share, as far as we know.
    public func haveComplete(_ addresses: [Q2QAddress]) -> Bool {
        addresses.allSatisfy { peers[$0]?.mask.isComplete == true }
    }

    /// Waits for the download to finish; returns where the share is.
    public func waitUntilComplete() async throws -> URL {
        if let location { return location }
        if let failure { throw failure }
        return try await withCheckedThrowingContinuation { completionWaiters.append($0) }
    }

    /// Leaves the swarm: stops timers and uploads (connections stay in the cache).
    public func close() {
        closed = true
        timers?.cancel()
        for key in peers.keys { peers[key]?.queue.removeAll() }
        if haveDirty, let partial { try? partial.saveHave(picker.have) }
        let waiters = completionWaiters
        completionWaiters = []
        for waiter in waiters { waiter.resume(throwing: ShareError.io("the download was stopped")) }
    }

    // MARK: Access

    /// Whether `peer` may fetch this share from us.
    func mayFetch(_ peer: Q2QAddress) -> Bool {
        guard !banned.contains(peer) else { return false }
        return access.isPublic || access.allowed.contains(peer) || introduced.contains(peer) || known.contains(peer)
    }

    // MARK: Joining

    /// A holder or peer we were told of: joined unless known already.
    func learn(of peer: Q2QAddress) {
        guard peer != context.address, !banned.contains(peer), !closed else { return }
        known.insert(peer)
        guard peers[peer]?.joined != true else { return }
        Task { await join(peer) }
    }

    /// `Get` to `peer`: our have-map for theirs. A few attempts, a second apart (a peer
    /// we were introduced to may not have the share ready yet).
    func join(_ peer: Q2QAddress, attempts: Int = 5) async {
        guard peers[peer] == nil || peers[peer]?.joined == false else { return }
        if peers[peer] == nil { peers[peer] = SwarmPeer(pieceCount: layout.pieceCount) }
        var problem = "no answer"
        for attempt in 1...attempts {
            guard !closed, !banned.contains(peer), peers[peer]?.joined == false else { return }
            do {
                let connection = try await context.connection(to: peer)
                let answer = try await connection.call(GetShare.self, .init(share: id.description, mask: picker.have,
                                                                             complete: picker.isComplete))
                guard answer.mask.count == layout.pieceCount else {
                    ban(peer, "its have-map has \(answer.mask.count) bits, the share \(layout.pieceCount) pieces")
                    return
                }
                if answer.public { access.isPublic = true }
                joined(peer, mask: answer.mask, on: connection)
                return
            } catch let error as SigmaError {
                if case .unknownShare = error, attempt < attempts {
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                context.logger.notice("sigma: \(peer) refused to share", metadata: ["share": "\(id)", "error": "\(error)"])
                problem = "\(error)"
                break
            } catch {
                context.logger.info("sigma: cannot reach \(peer)", metadata: ["share": "\(id)", "error": "\(error)"])
                problem = "\(error)"
                if attempt < attempts { try? await Task.sleep(for: .seconds(1)) }
            }
        }
        if peers[peer]?.joined == false { peers[peer] = nil }
        // A download left with nobody to fetch from says so instead of waiting forever.
        if !picker.isComplete, peers.isEmpty, location == nil {
            fail(.io("no holder of \(manifest.name) can be reached (\(peer): \(problem))"))
        }
    }

    /// `Get` from `peer`: its have-map for ours.
    func answerGet(from peer: Q2QAddress, mask: BitArray?, on connection: AMPConnection) throws(SigmaError) -> GetShare.Response {
        guard mayFetch(peer) else { throw .notAllowed("\(peer) may not fetch \(manifest.name)") }
        let mask = mask ?? BitArray(count: layout.pieceCount)
        guard mask.count == layout.pieceCount else {
            throw .badRequest("the have-map has \(mask.count) bits; the share has \(layout.pieceCount) pieces")
        }
        guard peers[peer] != nil || peers.count < Self.maximumPeers else { throw .notAllowed("this swarm is full") }
        known.insert(peer)
        joined(peer, mask: mask, on: connection)
        return GetShare.Response(mask: picker.have, public: access.isPublic)
    }

    /// `peer`'s have-map is known: count its pieces, introduce it around, ask it for pieces.
    func joined(_ peer: Q2QAddress, mask: BitArray, on connection: AMPConnection) {
        var state = peers[peer] ?? SwarmPeer(pieceCount: layout.pieceCount)
        let wasJoined = state.joined
        if wasJoined { picker.peerLeft(state.mask) }
        // `Have`s that arrived before the answer are kept.
        var merged = mask
        for index in state.mask.setIndices { merged[index] = true }
        state.mask = merged
        state.joined = true
        state.offered = state.offered.filter { !merged[$0] }
        if state.connection !== connection {
            state.connection = connection
            connection.channel.closeFuture.whenComplete { [weak self] _ in
                Task { await self?.connectionClosed(peer, connection) }
            }
        }
        peers[peer] = state
        picker.peerJoined(merged)
        if !wasJoined { introduce(peer) }
        refill(peer)
    }

    /// Tells `peer` of the others, and the others of `peer`: each may then fetch from
    /// the other (an introduction from a peer they trust admits it).
    func introduce(_ newcomer: Q2QAddress) {
        for (other, state) in peers where other != newcomer && state.joined {
            send(IntroducePeer.self, .init(share: id.description, peer: other), to: newcomer)
            send(IntroducePeer.self, .init(share: id.description, peer: newcomer), to: other)
        }
    }

    /// `Introduce` from `peer`: only a peer we trust may admit another.
    func introduced(_ newcomer: Q2QAddress, by peer: Q2QAddress) {
        // (Its `Get` answer may not have been read yet: an introduction follows it closely.)
        guard peers[peer] != nil, mayFetch(peer) else {
            context.logger.info("sigma: introduction ignored", metadata: ["from": "\(peer)", "share": "\(id)"])
            return
        }
        // Bounded: each introduction may make us dial someone, and an admitted peer must
        // not be able to make us dial without end.
        guard newcomer != context.address, !banned.contains(newcomer), peers.count < Self.maximumPeers,
              introduced.count < 2 * Self.maximumPeers || introduced.contains(newcomer) else { return }
        introduced.insert(newcomer)
        learn(of: newcomer)
    }

    /// A connection to `peer` closed: its requests go back to the pool; it is joined
    /// again after a moment while we still download.
    func connectionClosed(_ peer: Q2QAddress, _ connection: AMPConnection) {
        guard let state = peers[peer], state.connection === connection else { return }
        forget(peer)
        if !picker.isComplete, known.contains(peer), !banned.contains(peer), !closed {
            Task {
                try? await Task.sleep(for: .seconds(1))
                await self.join(peer, attempts: 3)
            }
        }
    }

    /// Drops `peer`'s state: its pieces no longer count, its requests are released.
    func forget(_ peer: Q2QAddress) {
        guard let state = peers.removeValue(forKey: peer) else { return }
        if state.joined { picker.peerLeft(state.mask) }
        for piece in state.requested.keys { picker.released(piece, from: peer) }
        assemblies = assemblies.filter { $0.key.peer != peer }
        for other in peers.keys { refill(other) }
    }

    /// Drops `peer` for this share and refuses it from now on.
    func ban(_ peer: Q2QAddress, _ reason: String) {
        guard !banned.contains(peer) else { return }
        context.logger.warning("sigma: dropped \(peer): \(reason)", metadata: ["share": "\(id)"])
        banned.insert(peer)
        known.remove(peer)
        introduced.remove(peer)
        forget(peer)
    }

    /// A violation by `peer` (unrequested data, a request out of range…); too many drop it.
    func violation(by peer: Q2QAddress, _ reason: String) {
        context.logger.info("sigma: \(peer): \(reason)", metadata: ["share": "\(id)"])
        peers[peer]?.violations += 1
        if let state = peers[peer], state.violations > Self.maximumViolations {
            ban(peer, "too many protocol violations (last: \(reason))")
        }
    }

    /// Sends a command that needs no answer to `peer` on its connection, if it has one.
    func send<Command: AMPCommand>(_ command: Command.Type, _ arguments: Command.Arguments, to peer: Q2QAddress) {
        guard let connection = peers[peer]?.connection else { return }
        do {
            try connection.sendWithoutWaiting(command, arguments)
        } catch {
            context.logger.debug("sigma: cannot send \(Command.name)", metadata: ["to": "\(peer)", "error": "\(error)"])
        }
    }

    // MARK: Timers

    func onTimer(tick: Int) {
        flushHaves()
        // Every second: progress saved, stuck requests asked elsewhere.
        if tick % 50 == 0 {
            if haveDirty, let partial {
                try? partial.saveHave(picker.have)
                haveDirty = false
            }
            expireRequests()
        }
    }

    /// Tells every peer of the pieces verified since last time.
    func flushHaves() {
        guard !pendingHaves.isEmpty else { return }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(pendingHaves.count * 4)
        for piece in pendingHaves { buffer.writeInteger(UInt32(piece)) }
        pendingHaves = []
        for (peer, state) in peers where state.joined {
            send(HavePieces.self, .init(share: id.description, pieces: AMPBytes(buffer)), to: peer)
        }
    }

    /// `Have` from `peer`.
    func received(haves bytes: ByteBuffer, from peer: Q2QAddress) {
        guard var state = peers[peer] else { return }
        guard bytes.readableBytes % 4 == 0 else {
            violation(by: peer, "a Have of \(bytes.readableBytes) bytes (not whole piece numbers)")
            return
        }
        var buffer = bytes
        while let piece = buffer.readInteger(as: UInt32.self) {
            let index = Int(piece)
            guard index < layout.pieceCount else {
                violation(by: peer, "Have of piece \(index), past the share's \(layout.pieceCount)")
                return
            }
            if !state.mask[index] {
                state.mask[index] = true
                state.offered.remove(index)
                if state.joined { picker.peerGained(index) }
            }
        }
        peers[peer] = state
        if state.joined { refill(peer) }
    }

    private func expireRequests() {
        let deadline = ContinuousClock.now - Self.requestTimeout
        for (peer, state) in peers {
            let stale = state.requested.filter { $0.value < deadline }.map(\.key)
            guard !stale.isEmpty else { continue }
            for piece in stale {
                peers[peer]?.requested[piece] = nil
                picker.released(piece, from: peer)
                assemblies[AssemblyKey(piece: piece, peer: peer)] = nil
                send(CancelPiece.self, .init(share: id.description, piece: piece), to: peer)
            }
            context.logger.info("sigma: \(stale.count) requests to \(peer) timed out", metadata: ["share": "\(id)"])
        }
        for peer in peers.keys { refill(peer) }
    }
}

extension SigmaSwarm {
    /// Lets `addresses` fetch this share (a push's receivers).
    func allow(_ addresses: [Q2QAddress]) {
        access.allowed.formUnion(addresses)
    }
}

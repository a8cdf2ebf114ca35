import AMP
import Foundation
import NIOCore
import NIOPosix
import Q2Q

/// A piece being received from one peer: its blocks may arrive in any order.
struct PieceAssembly {
    var bytes: [UInt8]
    var blocks: BitArray
}

struct AssemblyKey: Hashable {
    var piece: Int
    var peer: Q2QAddress
}

extension SigmaSwarm {
    /// How many requests to keep in flight with `peer`: enough for a quarter second at
    /// the rate it sends (so that its upload never waits for our next request), at
    /// least 4 and at most 128 pieces.
    func targetDepth(_ state: SwarmPeer) -> Int {
        let piecesPerQuarterSecond = state.rate.bytesPerSecond * 0.25 / Double(layout.pieceLength)
        return min(128, max(4, Int(piecesPerQuarterSecond.rounded(.up))))
    }

    /// Asks `peer` for more pieces, up to its depth: of our choice (rarest first), or of
    /// its choice when it holds the whole share.
    func refill(_ peer: Q2QAddress) {
        guard !picker.isComplete, !closed, var state = peers[peer], state.joined, state.connection != nil else { return }
        let room = targetDepth(state) - state.outstanding
        guard room > 0 else { return }
        if state.mask.isComplete {
            // Its choice: it spreads its uploads over the pieces it has sent least. Only as
            // many as we lack, counting what is already coming.
            let wanted = min(room, picker.missing - state.outstanding)
            guard wanted > 0 else { return }
            state.openChoices += wanted
            peers[peer] = state
            for _ in 0..<wanted { send(RequestPiece.self, .init(share: id.description, piece: RequestPiece.anyPiece), to: peer) }
            return
        }
        let pieces = picker.pick(for: peer, holding: state.mask, count: room)
        guard !pieces.isEmpty else { return }
        let now = ContinuousClock.now
        for piece in pieces {
            picker.requested(piece, from: peer)
            state.requested[piece] = now
        }
        peers[peer] = state
        for piece in pieces { send(RequestPiece.self, .init(share: id.description, piece: piece), to: peer) }
    }

    /// `Reject` from `peer`: it will not send `piece` (-1: it had nothing of its choice).
    func rejected(_ piece: Int, by peer: Q2QAddress) {
        guard var state = peers[peer] else { return }
        if piece == RequestPiece.anyPiece {
            guard state.openChoices > 0 else { return violation(by: peer, "a Reject of a choice never asked") }
            state.openChoices -= 1
            peers[peer] = state
            return
        }
        guard state.requested.removeValue(forKey: piece) != nil else { return }
        peers[peer] = state
        picker.released(piece, from: peer)
        assemblies[AssemblyKey(piece: piece, peer: peer)] = nil
        // Not asked again at once: it said it lacks the piece; its `Have` will say otherwise.
        if piece < layout.pieceCount, state.mask[piece] {
            peers[peer]?.mask[piece] = false
            picker.peerLost(piece)
        }
    }

    /// `Data` from `peer`: a block of a piece we asked it for. Blocks are checked against
    /// the piece's extent; the piece, once whole, against the hash tree.
    func received(data body: ByteBuffer, piece: Int, offset: Int, from peer: Q2QAddress) {
        guard var state = peers[peer] else {
            // Per message at debug only: a dropped peer that keeps sending must not flood the log.
            context.logger.debug("sigma: Data from \(peer), not a peer of this share, dropped", metadata: ["share": "\(id)"])
            return
        }
        guard piece >= 0, piece < layout.pieceCount else {
            return violation(by: peer, "Data of piece \(piece), past the share's \(layout.pieceCount)")
        }
        if state.requested[piece] == nil {
            // The first block of a piece it chose for us answers one of our -1 requests.
            guard state.openChoices > 0, offset == 0, assemblies[AssemblyKey(piece: piece, peer: peer)] == nil else {
                return violation(by: peer, "unrequested Data of piece \(piece)")
            }
            state.openChoices -= 1
            state.requested[piece] = .now
            if !picker.have[piece] { picker.requested(piece, from: peer) }
        }
        state.received += Int64(body.readableBytes)
        state.rate.add(body.readableBytes)
        peers[peer] = state
        statistics.bytesDownloaded += Int64(body.readableBytes)

        let extent = layout.extent(of: piece)
        let expected = offset >= 0 && offset < extent.length ? min(PieceLayout.transferBlock, extent.length - offset) : -1
        guard offset % PieceLayout.transferBlock == 0, body.readableBytes == expected else {
            dropRequest(piece, from: peer)
            return violation(by: peer, "Data of piece \(piece) at \(offset) with \(body.readableBytes) bytes does not fit the piece")
        }
        let key = AssemblyKey(piece: piece, peer: peer)
        let blockCount = (extent.length + PieceLayout.transferBlock - 1) / PieceLayout.transferBlock
        var assembly = assemblies[key] ?? PieceAssembly(bytes: [UInt8](repeating: 0, count: extent.length),
                                                       blocks: BitArray(count: blockCount))
        let block = offset / PieceLayout.transferBlock
        guard !assembly.blocks[block] else {
            assemblies[key] = assembly
            return violation(by: peer, "block \(block) of piece \(piece) sent twice")
        }
        assembly.blocks[block] = true
        assembly.bytes.withUnsafeMutableBytes { target in
            _ = body.withUnsafeReadableBytes { source in
                memcpy(target.baseAddress! + offset, source.baseAddress!, source.count)
            }
        }
        guard assembly.blocks.isComplete else {
            assemblies[key] = assembly
            return
        }
        assemblies[key] = nil
        peers[peer]?.requested[piece] = nil
        picker.released(piece, from: peer)
        guard !picker.have[piece] else {
            // A copy we asked two peers for in the endgame, and the other came first.
            return refill(peer)
        }
        guard assembly.bytes.withUnsafeBytes({ verifier.verify(piece, $0) }) else {
            statistics.piecesRejected += 1
            peers[peer]?.failures += 1
            context.logger.warning("sigma: piece \(piece) from \(peer) failed verification", metadata: ["share": "\(id)"])
            if let failures = peers[peer]?.failures, failures >= Self.maximumFailures {
                ban(peer, "\(failures) pieces failed verification")
            } else {
                refill(peer)
            }
            return
        }
        store(piece, assembly.bytes)
        refill(peer)
    }

    /// Gives up the request of `piece` from `peer`.
    func dropRequest(_ piece: Int, from peer: Q2QAddress) {
        assemblies[AssemblyKey(piece: piece, peer: peer)] = nil
        if peers[peer]?.requested.removeValue(forKey: piece) != nil {
            picker.released(piece, from: peer)
            send(CancelPiece.self, .init(share: id.description, piece: piece), to: peer)
        }
    }

    /// Writes a verified piece and counts it held; the peers also asked for it are told
    /// to stop.
    private func store(_ piece: Int, _ bytes: [UInt8]) {
        let written: Result<Void, ShareError> = bytes.withUnsafeBytes { buffer in
            Result { () throws(ShareError) in try files.write(piece, buffer) }
        }
        if case .failure(let error) = written { return fail(error) }
        for other in picker.verified(piece) {
            dropRequest(piece, from: other)
        }
        statistics.piecesHeld += 1
        statistics.bytesHeld += Int64(bytes.count)
        pendingHaves.append(piece)
        haveDirty = true
        if picker.isComplete { Task { await complete() } }
    }

    /// Every piece verified: the share goes to its name.
    func complete() async {
        guard location == nil, failure == nil, !finishing, let partial else { return }
        finishing = true
        defer { finishing = false }
        flushHaves()
        do {
            try partial.saveHave(picker.have)
            haveDirty = false
            // fdatasync and renames block: on NIO's thread pool, never on the event loop
            // the swarm (and other connections) run on.
            let files = self.files
            let url = try await NIOThreadPool.singleton.runIfActive { () throws(ShareError) -> URL in try partial.finish(files) }
            location = url
            let waiters = completionWaiters
            completionWaiters = []
            for waiter in waiters { waiter.resume(returning: url) }
        } catch let error as ShareError {
            fail(error)
        } catch {
            fail(.io("cannot put \(manifest.name) in place: \(error)"))
        }
    }

    func fail(_ error: ShareError) {
        guard failure == nil else { return }
        failure = error
        // A download that got nothing leaves nothing behind; one that got some keeps it
        // for the next attempt to resume.
        if picker.have.setCount == 0, let partial { partial.discard() }
        context.logger.error("sigma: \(error)", metadata: ["share": "\(id)"])
        let waiters = completionWaiters
        completionWaiters = []
        for waiter in waiters { waiter.resume(throwing: error) }
    }
}

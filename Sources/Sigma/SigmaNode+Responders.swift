import AMP
import NIOCore
import Q2Q

extension SigmaNode {
    /// The answers to one peer's Sigma commands (`peer` as its certificate says). Commands
    /// that get no answer never throw: a fault in one is logged and dropped, and the
    /// connection goes on serving every other share on it.
    func responders(for peer: Q2QAddress) -> AMPResponders {
        var responders = AMPResponders()
        responders.register(PutShare.self) { [self] arguments, _ in
            try await answerPut(arguments, from: peer)
        }
        responders.register(GetShare.self) { [self] arguments, context in
            try await existing(arguments.share).answerGet(from: peer, mask: arguments.mask, on: context.connection)
        }
        responders.register(FetchManifest.self) { [self] arguments, _ in
            try await existing(arguments.share).manifestChunk(for: peer, offset: arguments.offset)
        }
        responders.register(FetchHashes.self) { [self] arguments, _ in
            try await existing(arguments.share).hashes(for: peer, file: arguments.file, first: arguments.first, count: arguments.count)
        }
        responders.register(HavePieces.self) { [self] arguments, _ in
            await swarm(arguments.share, from: peer, HavePieces.name)?.received(haves: arguments.pieces.buffer, from: peer)
            return AMPEmpty()
        }
        responders.register(RequestPiece.self) { [self] arguments, _ in
            await swarm(arguments.share, from: peer, RequestPiece.name)?.requested(arguments.piece, by: peer)
            return AMPEmpty()
        }
        responders.register(CancelPiece.self) { [self] arguments, _ in
            await swarm(arguments.share, from: peer, CancelPiece.name)?.cancelled(arguments.piece, by: peer)
            return AMPEmpty()
        }
        responders.register(RejectPiece.self) { [self] arguments, _ in
            await swarm(arguments.share, from: peer, RejectPiece.name)?.rejected(arguments.piece, by: peer)
            return AMPEmpty()
        }
        responders.register(PieceData.self) { [self] arguments, _ in
            await swarm(arguments.share, from: peer, PieceData.name)?.received(
                data: arguments.body.buffer, piece: arguments.piece, offset: arguments.offset, from: peer)
            return AMPEmpty()
        }
        responders.register(IntroducePeer.self) { [self] arguments, _ in
            await swarm(arguments.share, from: peer, IntroducePeer.name)?.introduced(arguments.peer, by: peer)
            return AMPEmpty()
        }
        return responders
    }

    private func existing(_ share: String) throws(SigmaError) -> SigmaSwarm {
        guard let swarm = swarm(share) else { throw .unknownShare("no share \(share.prefix(64)) here") }
        return swarm
    }

    /// The swarm a command without an answer names; nil (logged) when there is none.
    private func swarm(_ share: String, from peer: Q2QAddress, _ command: String) -> SigmaSwarm? {
        guard let swarm = swarm(share) else {
            context.logger.info("sigma: \(command) for an unknown share dropped", metadata: ["from": "\(peer)", "share": "\(share.prefix(64))"])
            return nil
        }
        return swarm
    }
}

import Q2Q

/// Which pieces to ask a peer for: rarest first (fewest peers hold it), ties broken by
/// a random order fixed per download (so that downloaders spread out), and none asked
/// twice until every missing piece is in flight — then, in the endgame, a piece in
/// flight may be asked of one more peer, and the slower copy is cancelled.
///
/// A value type fed the swarm's have-maps and our requests; it does no I/O.
struct PiecePicker {
    let pieceCount: Int
    /// The pieces we hold, verified.
    private(set) var have: BitArray
    /// How many peers hold each piece.
    private var availability: [UInt16]
    /// The peers each in-flight piece was asked of.
    private var inFlight: [Int: [PeerKey]] = [:]
    /// How many peers each piece is asked of now (the scan's test, without hashing).
    private var requests: [UInt8]
    /// A random permutation of the pieces: scanning in this order breaks ties at random.
    private let order: [Int32]

    typealias PeerKey = Q2QAddress

    init(have: BitArray, random: inout some RandomNumberGenerator) {
        pieceCount = have.count
        self.have = have
        availability = [UInt16](repeating: 0, count: have.count)
        requests = [UInt8](repeating: 0, count: have.count)
        order = (0..<Int32(have.count)).shuffled(using: &random)
    }

    var isComplete: Bool { have.isComplete }
    var missing: Int { pieceCount - have.setCount }

    mutating func peerJoined(_ mask: BitArray) {
        for index in mask.setIndices { availability[index] &+= 1 }
    }

    mutating func peerLeft(_ mask: BitArray) {
        for index in mask.setIndices where availability[index] > 0 { availability[index] -= 1 }
    }

    mutating func peerGained(_ piece: Int) { availability[piece] &+= 1 }

    /// A peer turned out not to hold `piece` after all (it rejected a request for it).
    mutating func peerLost(_ piece: Int) {
        if availability[piece] > 0 { availability[piece] -= 1 }
    }

    func availabilityOf(_ piece: Int) -> Int { Int(availability[piece]) }

    /// Whether every piece is held by some peer other than us.
    var everyPieceElsewhere: Bool { !availability.contains(0) }

    /// Up to `count` pieces to ask `peer` for, among those its have-map shows: rarest
    /// first, none in flight; in the endgame (nothing else left to ask anyone), pieces
    /// in flight elsewhere, each at most twice in all.
    func pick(for peer: PeerKey, holding mask: BitArray, count: Int) -> [Int] {
        guard count > 0 else { return [] }
        var chosen: [(piece: Int, availability: UInt16)] = []
        chosen.reserveCapacity(count)
        var worst: UInt16 = .max
        for position in order {
            let piece = Int(position)
            guard mask[piece], requests[piece] == 0, !have[piece] else { continue }
            let rarity = availability[piece]
            if chosen.count < count {
                chosen.append((piece, rarity))
                worst = chosen.count == count ? chosen.map(\.availability).max()! : .max
            } else if rarity < worst {
                let index = chosen.firstIndex { $0.availability == worst }!
                chosen[index] = (piece, rarity)
                worst = chosen.map(\.availability).max()!
            }
            if chosen.count == count, worst <= 1 { break }
        }
        if !chosen.isEmpty { return chosen.map(\.piece) }
        // Endgame: nothing unrequested is left that this peer has.
        guard inFlight.count >= missing else { return [] }
        return inFlight.lazy.filter { piece, peers in mask[piece] && peers.count < 2 && !peers.contains(peer) }
            .prefix(count).map(\.key)
    }

    mutating func requested(_ piece: Int, from peer: PeerKey) {
        inFlight[piece, default: []].append(peer)
        requests[piece] &+= 1
    }

    /// The request of `piece` from `peer` is over (arrived, failed, rejected, cancelled).
    mutating func released(_ piece: Int, from peer: PeerKey) {
        guard var peers = inFlight[piece], let index = peers.firstIndex(of: peer) else { return }
        peers.remove(at: index)
        requests[piece] -= 1
        inFlight[piece] = peers.isEmpty ? nil : peers
    }

    /// `piece` verified: held; the peers it was also asked of are returned (to cancel).
    mutating func verified(_ piece: Int) -> [PeerKey] {
        have[piece] = true
        requests[piece] = 0
        return inFlight.removeValue(forKey: piece) ?? []
    }
}

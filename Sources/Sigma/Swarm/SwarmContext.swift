import AMP
import Logging
import Q2Q

/// What every swarm of a node shares: who we are, how to reach a peer (the node's
/// connection cache), the upload cap and the log.
final class SwarmContext: Sendable {
    let node: Q2QNode
    let address: Q2QAddress
    let limiter: UploadLimiter
    let logger: Logger

    init(node: Q2QNode, address: Q2QAddress, uploadRate: Int?, logger: Logger) {
        self.node = node
        self.address = address
        self.limiter = UploadLimiter(bytesPerSecond: uploadRate)
        self.logger = logger
    }

    /// The cached `sigma` connection to `peer` (opened when needed).
    func connection(to peer: Q2QAddress) async throws -> AMPConnection {
        try await node.ampConnection(from: address, to: peer, service: Sigma.service)
    }
}

/// Who may fetch a share from us.
public struct ShareAccess: Sendable {
    /// These addresses (the ones a share was pushed to, or given with `--allow`).
    public var allowed: Set<Q2QAddress>
    /// Anyone who names the share.
    public var isPublic: Bool

    public init(allowed: Set<Q2QAddress> = [], isPublic: Bool = false) {
        self.allowed = allowed
        self.isPublic = isPublic
    }
}

/// What a swarm has done so far.
public struct SwarmStatistics: Sendable, Codable {
    public var pieces: Int
    public var piecesHeld: Int
    /// Pieces found verified on disk when a download was resumed.
    public var piecesResumed: Int
    public var bytesTotal: Int64
    public var bytesHeld: Int64
    /// Piece bytes received this run (verified or not).
    public var bytesDownloaded: Int64
    public var bytesUploaded: Int64
    /// Pieces that failed verification.
    public var piecesRejected: Int
    public var peers: Int
    /// Peers that hold the whole share, as far as we know.
    public var peersComplete: Int
    public var peersBanned: Int
}

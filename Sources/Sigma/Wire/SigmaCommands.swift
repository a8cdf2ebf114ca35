import AMP
import Q2Q

// Sigma's AMP commands, on Q2Q streams of service `sigma` through the connection cache.
// The original's names are kept where their roles survive (`Put`, `Get`, `Data`,
// `Introduce`); `Verify` is gone (pieces are checked locally against the share's hash
// tree). Shares are named by 64 hex digits (``ShareID``); pieces are numbered across the
// share (``PieceLayout``). Every size is checked against the share's layout on arrival.

public enum Sigma {
    /// The Q2Q service name.
    public static let service = "sigma"
}

/// `Put`: "I have this share; fetch it" — the pusher to a receiver, who fetches only
/// from senders it authorized.
public enum PutShare: AMPCommand {
    public static let name = "Put"
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var kind: String
        public var name: String
        public var size: Int
        public var peers: [Q2QAddress]?
    }
    public typealias Failure = SigmaError
}

/// `Get`: join a share's swarm: the caller's have-map in, the holder's out. Either side
/// may then request pieces the other has. Pieces are counted from the share's layout;
/// a have-map of another length is refused.
public enum GetShare: AMPCommand {
    public static let name = "Get"
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var mask: BitArray?
        /// The caller seeds this share (its have-map is whole).
        public var complete: Bool?
    }
    public struct Response: Codable, Sendable {
        public var mask: BitArray
        /// Whether anyone who names the share may fetch it (then every holder serves anyone).
        public var `public`: Bool
    }
    public typealias Failure = SigmaError
}

/// `Manifest`: a chunk of a directory share's manifest, from `offset`.
public enum FetchManifest: AMPCommand {
    public static let name = "Manifest"
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var offset: Int
    }
    public struct Response: Codable, Sendable {
        public var total: Int
        public var chunk: AMPBytes
    }
    public typealias Failure = SigmaError
    /// Most manifest bytes per answer.
    public static let maximumChunk = 60_000
}

/// `Hashes`: `count` piece-layer hashes of file `file` from `first`.
public enum FetchHashes: AMPCommand {
    public static let name = "Hashes"
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var file: Int
        public var first: Int
        public var count: Int
    }
    public struct Response: Codable, Sendable {
        public var hashes: AMPBytes
    }
    public typealias Failure = SigmaError
    /// Most hashes per answer (32 bytes each, inside AMP's 64 KiB value).
    public static let maximumCount = 2_000
}

/// `Have`: pieces the sender has verified since it last said (no answer).
public enum HavePieces: AMPCommand {
    public static let name = "Have"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var share: String
        /// Piece numbers, 4 bytes each, big-endian.
        public var pieces: AMPBytes
    }
}

/// `Request`: send piece `piece`, or with -1 a piece of the holder's choosing that the
/// caller lacks (asked of peers that hold the whole share: they spread what they upload
/// over pieces nobody else has yet). No answer: the piece comes as `Data`, or `Reject`.
public enum RequestPiece: AMPCommand {
    public static let name = "Request"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var piece: Int
    }
    /// The `piece` of a request that leaves the choice to the holder.
    public static let anyPiece = -1
}

/// `Cancel`: the caller no longer wants `piece` (no answer).
public enum CancelPiece: AMPCommand {
    public static let name = "Cancel"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var piece: Int
    }
}

/// `Reject`: the holder will not send `piece` (it does not have it, or has nothing the
/// caller lacks for a -1 request); the caller may ask elsewhere (no answer).
public enum RejectPiece: AMPCommand {
    public static let name = "Reject"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var piece: Int
    }
}

/// `Data`: bytes of `piece` from `offset`, at most ``PieceLayout/transferBlock`` of them,
/// in order; a piece comes whole from one holder (no answer).
public enum PieceData: AMPCommand {
    public static let name = "Data"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var piece: Int
        public var offset: Int
        public var body: AMPBytes
    }
}

/// `Introduce`: `peer` is in this share's swarm too: it may fetch from you, and you
/// from it (no answer).
public enum IntroducePeer: AMPCommand {
    public static let name = "Introduce"
    public static var requiresAnswer: Bool { false }
    public struct Arguments: Codable, Sendable {
        public var share: String
        public var peer: Q2QAddress
    }
}

/// The declared errors of the Sigma commands.
public enum SigmaError: AMPDeclaredError, Hashable, CustomStringConvertible {
    /// No such share here.
    case unknownShare(String)
    /// The caller may not fetch this share, or push to us.
    case notAllowed(String)
    /// The request does not fit the share (wrong have-map length, piece out of range, …).
    case badRequest(String)

    public var code: String {
        switch self {
        case .unknownShare: "UnknownShare"
        case .notAllowed: "NotAllowed"
        case .badRequest: "BadRequest"
        }
    }

    public var errorDescription: String {
        switch self {
        case .unknownShare(let text), .notAllowed(let text), .badRequest(let text): text
        }
    }

    public init?(code: String, description: String) {
        switch code {
        case "UnknownShare": self = .unknownShare(description)
        case "NotAllowed": self = .notAllowed(description)
        case "BadRequest": self = .badRequest(description)
        default: return nil
        }
    }

    public var description: String { "\(code): \(errorDescription)" }
}

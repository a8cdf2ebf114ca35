/// Size limits enforced when reading and writing boxes.
///
/// The key and value limits are AMP's own (Twisted's `MAX_KEY_LENGTH` and
/// `MAX_VALUE_LENGTH`). AMP itself puts no bound on the number of pairs in a box, so a
/// peer could make a receiver buffer without end; `maximumBoxSize` is ours and bounds
/// what one box may occupy before it is complete.
public struct AMPLimits: Sendable, Hashable {
    /// Longest key AMP allows (Twisted's `MAX_KEY_LENGTH`).
    public static let maximumKeyLength = 0xFF
    /// Longest value AMP allows (Twisted's `MAX_VALUE_LENGTH`); a 2-byte length prefix.
    public static let maximumValueLength = 0xFFFF

    /// Most bytes (prefixes included) one incoming box may take. A box that grows past
    /// this closes the connection.
    public var maximumBoxSize: Int

    /// Most requests from the peer being answered at once; past this the connection stops
    /// reading until some are answered, so a peer that floods requests is slowed down
    /// rather than buffered without bound.
    public var maximumConcurrentIncomingRequests: Int

    /// How long a new connection may take to send its first complete box before it is
    /// closed (nil: no limit). A server facing the internet sets it, as OpenSSH's
    /// `LoginGraceTime` and nginx's header timeout do: a peer that connects and says
    /// nothing does not hold a descriptor for long.
    public var firstBoxTimeout: TimeAmountSeconds?

    /// How long part of a box may sit without another byte of it arriving before the
    /// connection is closed (nil: no limit): a peer that sends half a box and stalls.
    public var partialBoxTimeout: TimeAmountSeconds?

    public init(maximumBoxSize: Int = 1 << 20, maximumConcurrentIncomingRequests: Int = 1024,
                firstBoxTimeout: TimeAmountSeconds? = nil, partialBoxTimeout: TimeAmountSeconds? = nil) {
        precondition(maximumBoxSize >= 4 + Self.maximumKeyLength + Self.maximumValueLength + 2,
                     "a box must at least hold one pair of the largest size")
        self.maximumBoxSize = maximumBoxSize
        self.maximumConcurrentIncomingRequests = maximumConcurrentIncomingRequests
        self.firstBoxTimeout = firstBoxTimeout
        self.partialBoxTimeout = partialBoxTimeout
    }

    public static let `default` = AMPLimits()
}

/// A timeout in seconds (a plain number keeps ``AMPLimits`` free of NIO's types).
public typealias TimeAmountSeconds = Double

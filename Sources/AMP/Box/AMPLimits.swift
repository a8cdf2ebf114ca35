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

    public init(maximumBoxSize: Int = 1 << 20, maximumConcurrentIncomingRequests: Int = 1024) {
        precondition(maximumBoxSize >= 4 + Self.maximumKeyLength + Self.maximumValueLength + 2,
                     "a box must at least hold one pair of the largest size")
        self.maximumBoxSize = maximumBoxSize
        self.maximumConcurrentIncomingRequests = maximumConcurrentIncomingRequests
    }

    public static let `default` = AMPLimits()
}

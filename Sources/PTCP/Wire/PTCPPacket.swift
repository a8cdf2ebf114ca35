/// One PTCP v2 datagram (see docs/ptcp.md): a fixed header, then the optional parts its
/// flags name, in this order: handshake, acknowledgement, stream data.
///
/// Packet numbers count datagrams, not bytes, and are never reused: a retransmission
/// carries the lost bytes (by stream offset) in a new packet. That makes every RTT
/// sample unambiguous (no Karn's rule needed) and loss detection a matter of packet
/// numbers, as in QUIC.
public struct PTCPPacket: Equatable, Sendable {
    public static let version: UInt8 = 3
    /// version, flags, destination id: what every packet starts with (the packet
    /// number follows, 1 to 4 bytes).
    public static let fixedHeaderSize = 1 + 1 + 8
    /// A datagram never exceeds this (what the dispatcher reads at most).
    public static let maximumDatagramSize = 65_507
    /// At most this many acknowledged ranges in one packet.
    public static let maximumAckRanges = 32
    /// Packet numbers, stream offsets and window limits stay below this (the largest
    /// value a variable-length integer holds).
    public static let maximumValue: UInt64 = (1 << 62) - 1

    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Opens a connection; carries ``Handshake``.
        public static let syn = Flags(rawValue: 0x01)
        /// Carries ``Acknowledgement``.
        public static let ack = Flags(rawValue: 0x02)
        /// Carries ``StreamData``.
        public static let data = Flags(rawValue: 0x04)
        /// The sender's stream ends at the end of this packet's data (data may be empty).
        public static let fin = Flags(rawValue: 0x08)
        /// Abort: the connection is gone.
        public static let rst = Flags(rawValue: 0x10)
        /// Asks for an acknowledgement (keepalive, probes, window queries).
        public static let ping = Flags(rawValue: 0x20)
        /// The flags byte's top two bits: the packet number's size on the wire, less one.
        static let packetNumberSizeMask: UInt8 = 0xC0
    }

    /// The sender's own connection id (where the answer must go) and how many bytes of
    /// its stream it accepts before its first acknowledgement says more.
    public struct Handshake: Equatable, Sendable {
        public var sourceID: UInt64
        public var initialMaxData: UInt64
        public init(sourceID: UInt64, initialMaxData: UInt64) {
            self.sourceID = sourceID
            self.initialMaxData = initialMaxData
        }
        var encodedSize: Int { 8 + VarInt.size(of: initialMaxData) }
    }

    /// Packet numbers received, as disjoint ranges from the highest down, plus the
    /// receiver's flow-control limit.
    public struct Acknowledgement: Equatable, Sendable {
        /// The stream offset up to which the sender of this ack accepts data.
        public var maxData: UInt64
        /// Microseconds the receiver held the largest packet before acknowledging it.
        public var delayMicroseconds: UInt32
        /// Inclusive ranges, descending, disjoint and not adjacent (at least one packet
        /// missing between two); the first holds the largest.
        public var ranges: [ClosedRange<UInt64>]
        public init(maxData: UInt64, delayMicroseconds: UInt32, ranges: [ClosedRange<UInt64>]) {
            self.maxData = maxData
            self.delayMicroseconds = delayMicroseconds
            self.ranges = ranges
        }
        public var largest: UInt64 { ranges.first?.upperBound ?? 0 }
        var encodedSize: Int {
            var size = VarInt.size(of: maxData) + VarInt.size(of: UInt64(delayMicroseconds)) + 1
            var previousLow: UInt64?
            for range in ranges {
                if let previousLow {
                    size += VarInt.size(of: previousLow &- range.upperBound &- 2)
                } else {
                    size += VarInt.size(of: range.upperBound)
                }
                size += VarInt.size(of: range.upperBound &- range.lowerBound)
                previousLow = range.lowerBound
            }
            return size
        }
    }

    public struct StreamData: Equatable, Sendable {
        public var offset: UInt64
        public var bytes: [UInt8]
        public init(offset: UInt64, bytes: [UInt8]) {
            self.offset = offset
            self.bytes = bytes
        }
    }

    public var flags: Flags
    public var destinationID: UInt64
    public var packetNumber: UInt64
    /// How many low bytes of the packet number travel (1 to 4): enough for the
    /// receiver to place it among the numbers it may still receive (see
    /// ``value(nearest:withLowBits:bits:)``).
    public var packetNumberSize: Int
    public var handshake: Handshake?
    public var acknowledgement: Acknowledgement?
    public var data: StreamData?
    /// Zero bytes after the parts, in a SYN or a PING only: a client pads its SYN to a
    /// full datagram, so that the path's MTU is proven before any data depends on it and
    /// so that the acceptor may answer early data with up to three times as much; a
    /// padded PING probes whether the path carries larger datagrams.
    public var padding: Int

    public init(flags: Flags = [], destinationID: UInt64, packetNumber: UInt64, packetNumberSize: Int = 4,
                handshake: Handshake? = nil, acknowledgement: Acknowledgement? = nil, data: StreamData? = nil,
                padding: Int = 0) {
        precondition((1...4).contains(packetNumberSize), "a packet number travels in 1 to 4 bytes")
        var flags = flags
        if handshake != nil { flags.insert(.syn) }
        if acknowledgement != nil { flags.insert(.ack) }
        if data != nil { flags.insert(.data) }
        self.flags = flags
        self.destinationID = destinationID
        self.packetNumber = packetNumber
        self.packetNumberSize = packetNumberSize
        self.handshake = handshake
        self.acknowledgement = acknowledgement
        self.data = data
        self.padding = Self.mayBePadded(flags) ? max(0, padding) : 0
    }

    /// Only a SYN or a PING may be padded; their stream data says its length, where
    /// any other packet's runs to the end of the datagram.
    static func mayBePadded(_ flags: Flags) -> Bool {
        !flags.isDisjoint(with: [.syn, .ping])
    }

    /// Whether the receiver must acknowledge this packet (pure acknowledgements are not
    /// acknowledged, or two idle ends would ack each other forever).
    public var isAckEliciting: Bool {
        !flags.isDisjoint(with: [.syn, .data, .fin, .ping])
    }

    /// The size of everything but the stream bytes and the padding.
    public var overhead: Int {
        var size = Self.fixedHeaderSize + packetNumberSize
        size += handshake?.encodedSize ?? 0
        size += acknowledgement?.encodedSize ?? 0
        if data != nil {
            size += 4 + (Self.mayBePadded(flags) ? 2 : 0)
        }
        return size
    }

    public var encodedSize: Int {
        overhead + (data?.bytes.count ?? 0) + padding
    }

    public func encode(into out: inout [UInt8]) {
        out.reserveCapacity(out.count + encodedSize)
        out.append(Self.version)
        out.append(flags.rawValue | UInt8(packetNumberSize - 1) << 6)
        out.appendBigEndian(destinationID)
        for shift in stride(from: 8 * (packetNumberSize - 1), through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: packetNumber >> UInt64(shift)))
        }
        if let handshake {
            out.appendBigEndian(handshake.sourceID)
            VarInt.append(handshake.initialMaxData, to: &out)
        }
        if let acknowledgement {
            VarInt.append(acknowledgement.maxData, to: &out)
            VarInt.append(UInt64(acknowledgement.delayMicroseconds), to: &out)
            out.append(UInt8(acknowledgement.ranges.count))
            var previousLow: UInt64?
            for range in acknowledgement.ranges {
                if let previousLow {
                    precondition(range.upperBound + 2 <= previousLow, "acknowledged ranges must be descending and not adjacent")
                    VarInt.append(previousLow - range.upperBound - 2, to: &out)
                } else {
                    VarInt.append(range.upperBound, to: &out)
                }
                VarInt.append(range.upperBound - range.lowerBound, to: &out)
                previousLow = range.lowerBound
            }
        }
        if let data {
            out.appendBigEndian(UInt32(truncatingIfNeeded: data.offset))
            if Self.mayBePadded(flags) { out.appendBigEndian(UInt16(data.bytes.count)) }
            out.append(contentsOf: data.bytes)
        }
        if padding > 0 { out.append(contentsOf: repeatElement(0, count: padding)) }
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    /// The destination id of a datagram, read without decoding the rest (the
    /// dispatcher routes on it); nil when it is not a PTCP datagram of this version.
    public static func destinationID<Bytes: Collection<UInt8>>(of datagram: Bytes) -> UInt64? {
        guard datagram.count > fixedHeaderSize, datagram.first == version else { return nil }
        var reader = PacketReader(datagram.dropFirst(2))
        return try? reader.uint64()
    }

    /// Decodes one datagram, checking every length against what arrived. A stream
    /// offset travels as its low 32 bits and is taken as the value nearest
    /// `expectedOffset` (the receiver's next in-order byte), as TCP's sequence numbers are;
    /// the packet number likewise nearest `expectedPacketNumber` (one past the largest
    /// received), as QUIC's are.
    public init<Bytes: Collection<UInt8>>(decoding datagram: Bytes, expectedPacketNumber: UInt64 = 0,
                                          expectedOffset: UInt64 = 0) throws(PTCPPacketError) {
        guard datagram.count > Self.fixedHeaderSize else { throw .truncated }
        guard datagram.count <= Self.maximumDatagramSize else { throw .tooLarge }
        var reader = PacketReader(datagram)
        let version = try reader.uint8()
        guard version == Self.version else { throw .unknownVersion(version) }
        let flagsByte = try reader.uint8()
        flags = Flags(rawValue: flagsByte & ~Flags.packetNumberSizeMask)
        packetNumberSize = Int(flagsByte >> 6) + 1
        destinationID = try reader.uint64()
        var low: UInt64 = 0
        for _ in 0..<packetNumberSize { low = low << 8 | UInt64(try reader.uint8()) }
        packetNumber = Self.value(nearest: expectedPacketNumber, withLowBits: low, bits: 8 * packetNumberSize)
        if flags.contains(.syn) {
            handshake = Handshake(sourceID: try reader.uint64(), initialMaxData: try reader.varInt())
        }
        if flags.contains(.ack) {
            let maxData = try reader.varInt()
            let delay = try reader.varInt()
            guard delay <= UInt32.max else { throw .malformed("an acknowledgement delay of \(delay) µs") }
            let count = Int(try reader.uint8())
            guard count >= 1, count <= Self.maximumAckRanges else { throw .malformed("\(count) acknowledged ranges") }
            var ranges: [ClosedRange<UInt64>] = []
            ranges.reserveCapacity(count)
            var high = try reader.varInt()
            for index in 0..<count {
                if index > 0 {
                    let gap = try reader.varInt()
                    let previousLow = ranges[index - 1].lowerBound
                    guard previousLow >= 2, gap <= previousLow - 2 else { throw .malformed("an acknowledged range below packet 0") }
                    high = previousLow - 2 - gap
                }
                let length = try reader.varInt()
                guard length <= high else { throw .malformed("an acknowledged range below packet 0") }
                ranges.append((high - length)...high)
            }
            acknowledgement = Acknowledgement(maxData: maxData, delayMicroseconds: UInt32(delay), ranges: ranges)
        }
        if flags.contains(.data) {
            // Unambiguous while every offset in flight lies within 2 GiB of the receiver's
            // next in-order byte: the receive window is at most 1 GiB, so only a datagram
            // the network held while gigabytes passed could be misplaced, and it then
            // falls outside the window and is dropped.
            let offset = Self.value(nearest: expectedOffset, withLowBits: UInt64(try reader.uint32()), bits: 32)
            let length = Self.mayBePadded(flags) ? Int(try reader.uint16()) : reader.remaining
            let bytes = try reader.bytes(length)
            guard offset + UInt64(bytes.count) <= Self.maximumValue else { throw .malformed("stream offset out of range") }
            data = StreamData(offset: offset, bytes: bytes)
        } else {
            data = nil
        }
        padding = 0
        if Self.mayBePadded(flags), !reader.isAtEnd {
            let rest = try reader.bytes(reader.remaining)
            guard rest.allSatisfy({ $0 == 0 }) else { throw .malformed("\(rest.count) bytes after the packet") }
            padding = rest.count
        }
        guard reader.isAtEnd else { throw .malformed("\(reader.remaining) bytes after the packet") }
    }
}

extension PTCPPacket {
    /// The value whose low `bits` bits are `low` nearest to `expected`, never below 0 nor
    /// above ``maximumValue`` (RFC 9000, appendix A.3). Packet numbers travel as their low
    /// bytes, stream offsets as their low 32 bits.
    static func value(nearest expected: UInt64, withLowBits low: UInt64, bits: Int) -> UInt64 {
        let window: UInt64 = 1 << UInt64(bits)
        let half = window / 2
        let candidate = (expected & ~(window - 1)) | low
        if candidate + half <= expected, candidate < PTCPPacket.maximumValue - window { return candidate + window }
        if candidate > expected + half, candidate >= window { return candidate - window }
        return candidate
    }

    /// The bytes that let the receiver place `number` when the peer has acknowledged up
    /// to `largestAcknowledged`, even after later packets overtook it.
    ///
    /// QUIC sends as few bytes as cover twice the unacknowledged span (RFC 9000, A.2) and
    /// counts on packet protection: a packet whose number the receiver misplaces fails
    /// to decrypt and is dropped. PTCP packets are not authenticated (TLS runs above
    /// them), so a misplaced number would be believed: the receiver would acknowledge a
    /// packet the sender never sent, or one still on its way, and the sender would drop
    /// every later acknowledgement as forged, or never resend that packet's bytes. Seen
    /// on a 200 ms path that sent 1 % of packets 100 ms early: 170 later packets had
    /// overtaken one sent in a single byte. So PTCP uses at least 2 bytes and covers four
    /// times the unacknowledged span: a packet overtaken by as many as were
    /// unacknowledged when it left, or by up to 32,766, still comes back right.
    public static func packetNumberSize(for number: UInt64, largestAcknowledged: UInt64?) -> Int {
        let unacknowledged = largestAcknowledged.map { number > $0 ? number - $0 : 1 } ?? number + 1
        let range = 4 * unacknowledged
        for size in 2...3 where range < 1 << UInt64(8 * size) { return size }
        return 4
    }
}

/// QUIC's variable-length integers (RFC 9000, 16): the top two bits of the first byte
/// say the length (1, 2, 4 or 8 bytes), the rest is the value, big-endian. We accept
/// only the shortest encoding, so that every packet has exactly one.
enum VarInt {
    static func size(of value: UInt64) -> Int {
        switch value {
        case ..<(1 << 6): 1
        case ..<(1 << 14): 2
        case ..<(1 << 30): 4
        default: 8
        }
    }

    static func append(_ value: UInt64, to out: inout [UInt8]) {
        precondition(value <= PTCPPacket.maximumValue, "\(value) does not fit a variable-length integer")
        switch size(of: value) {
        case 1: out.append(UInt8(value))
        case 2: out.appendBigEndian(UInt16(value) | 0x4000)
        case 4: out.appendBigEndian(UInt32(value) | 0x8000_0000)
        default: out.appendBigEndian(value | 0xC000_0000_0000_0000)
        }
    }
}

public enum PTCPPacketError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated
    case tooLarge
    case unknownVersion(UInt8)
    case malformed(String)

    public var description: String {
        switch self {
        case .truncated: "a PTCP datagram shorter than its contents"
        case .tooLarge: "a PTCP datagram larger than any UDP datagram"
        case .unknownVersion(let version): "PTCP version \(version), not \(PTCPPacket.version)"
        case .malformed(let what): "a malformed PTCP datagram: \(what)"
        }
    }
}

/// Big-endian reads that fail with `.truncated` instead of trapping.
struct PacketReader<Bytes: Collection<UInt8>> {
    private let bytes: Bytes
    private var index: Bytes.Index

    init(_ bytes: Bytes) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    var isAtEnd: Bool { index == bytes.endIndex }
    var remaining: Int { bytes.distance(from: index, to: bytes.endIndex) }

    mutating func uint8() throws(PTCPPacketError) -> UInt8 {
        guard index != bytes.endIndex else { throw .truncated }
        defer { index = bytes.index(after: index) }
        return bytes[index]
    }

    mutating func uint16() throws(PTCPPacketError) -> UInt16 {
        UInt16(try uint8()) << 8 | UInt16(try uint8())
    }

    mutating func uint32() throws(PTCPPacketError) -> UInt32 {
        UInt32(try uint16()) << 16 | UInt32(try uint16())
    }

    mutating func uint64() throws(PTCPPacketError) -> UInt64 {
        UInt64(try uint32()) << 32 | UInt64(try uint32())
    }

    mutating func varInt() throws(PTCPPacketError) -> UInt64 {
        let first = try uint8()
        let length = 1 << Int(first >> 6)
        var value = UInt64(first & 0x3F)
        for _ in 1..<length { value = value << 8 | UInt64(try uint8()) }
        guard VarInt.size(of: value) == length else { throw .malformed("a variable-length integer not in its shortest form") }
        return value
    }

    mutating func bytes(_ count: Int) throws(PTCPPacketError) -> [UInt8] {
        guard remaining >= count else { throw .truncated }
        let end = bytes.index(index, offsetBy: count)
        defer { index = end }
        return Array(bytes[index..<end])
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

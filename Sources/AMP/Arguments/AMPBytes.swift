import NIOCore

/// Bytes for an AMP `String` argument, without copies: decoding gives a slice of the
/// received buffer, encoding writes the buffer as it is.
///
/// `[UInt8]` and `Data` also map to AMP `String`; this is the zero-copy choice for large
/// or frequent payloads.
public struct AMPBytes: Sendable, Hashable, Codable, AMPArgumentCodable {
    public var buffer: ByteBuffer

    public init(_ buffer: ByteBuffer) {
        self.buffer = buffer
    }

    public init(_ bytes: some Sequence<UInt8>) {
        self.buffer = ByteBuffer(bytes: bytes)
    }

    public var bytes: [UInt8] { Array(buffer.readableBytesView) }
    public var count: Int { buffer.readableBytes }

    public func encodeAMPArgument(into buffer: inout ByteBuffer) throws(AMPArgumentError) {
        buffer.writeImmutableBuffer(self.buffer)
    }

    public static func decodeAMPArgument(from buffer: ByteBuffer) throws(AMPArgumentError) -> AMPBytes {
        AMPBytes(buffer)
    }

    /// Outside AMP (JSON, …) the bytes are an array of numbers.
    public init(from decoder: any Decoder) throws {
        self.buffer = ByteBuffer(bytes: try [UInt8](from: decoder))
    }

    public func encode(to encoder: any Encoder) throws {
        try bytes.encode(to: encoder)
    }
}

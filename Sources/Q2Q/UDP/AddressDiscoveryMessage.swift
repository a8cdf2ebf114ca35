import NIOCore

/// Address discovery over UDP (docs/nat-traversal.md): a node asks its presence
/// server, from the very socket its PTCP connections use, which address and port the
/// server sees — the node's NAT mapping. Our own exchange, simpler than STUN and
/// distinguishable from PTCP by its first byte (PTCP's is its wire version, 3):
///
///     request  44 bytes: "Q2Q?" | transaction id (12) | zeros (28)
///     answer   23 or 35: "Q2Q=" | transaction id (12) | family 4 or 6 (1) | port (2) | address (4 or 16)
///              then, from servers that make them, the proof of that address (8, ``AddressProofs``): 31 or 43
///
/// NAT behaviour tests (RFC 5780's, in our format; `vertex doctor`) use a request
/// whose first padding byte has bit 7 set:
///
///     test     44 bytes: "Q2Q?" | transaction id (12) | flags (1) | delay in ms (2) | zeros (25)
///              flags: 0x80 test, 0x01 answer from the other port, 0x02 from the other address
///     answer   "Q2Q=" | transaction id | family | port | address | other: family 0, or 4 | port (2) | IPv4 (4)
///
/// A test's answer also names the server's other address (its second address, or its
/// first with the second port) when it has one, comes from the socket the flags ask
/// for (none when the server has no such socket), and `delay` ms late (at most 5 s:
/// a mapping that outlives the wait is open at least that long). 24, 30, 36 or 42
/// bytes, so it never collides with a plain answer's 23 or 35, or 31 or 43 with a proof.
///
/// A request is padded to be at least as long as any answer, so a server never sends
/// more than it received: spoofed requests cannot use it to amplify traffic.
package enum AddressDiscoveryMessage: Equatable, Sendable {
    case request(transaction: [UInt8])
    case answer(transaction: [UInt8], address: HostPort, proof: [UInt8]? = nil)
    case test(transaction: [UInt8], NATTest)
    case testAnswer(transaction: [UInt8], address: HostPort, other: HostPort?)

    /// What a NAT behaviour test asks of the server.
    package struct NATTest: Equatable, Sendable {
        var changePort = false
        var changeAddress = false
        /// Milliseconds to wait before answering, at most ``maximumDelay``.
        var delay: UInt16 = 0

        static let maximumDelay: UInt16 = 5000
    }

    static let requestMagic: [UInt8] = Array("Q2Q?".utf8)
    static let answerMagic: [UInt8] = Array("Q2Q=".utf8)
    static let transactionSize = 12
    package static let requestSize = 44

    /// Parses a datagram; `nil` for anything that is not exactly one of the forms.
    package init?(decoding bytes: some Collection<UInt8>) {
        let bytes = Array(bytes.prefix(Self.requestSize + 1))
        guard bytes.count >= 4 + Self.transactionSize else { return nil }
        let magic = Array(bytes[0..<4])
        let transaction = Array(bytes[4..<(4 + Self.transactionSize)])
        let rest = Array(bytes[(4 + Self.transactionSize)...])
        if magic == Self.requestMagic {
            guard bytes.count == Self.requestSize else { return nil }
            if rest.allSatisfy({ $0 == 0 }) {
                self = .request(transaction: transaction)
                return
            }
            let flags = rest[0]
            let delay = UInt16(rest[1]) << 8 | UInt16(rest[2])
            guard flags & 0x80 != 0, flags & 0x7c == 0, delay <= NATTest.maximumDelay, rest[3...].allSatisfy({ $0 == 0 }) else { return nil }
            self = .test(transaction: transaction, NATTest(changePort: flags & 0x01 != 0, changeAddress: flags & 0x02 != 0, delay: delay))
        } else if magic == Self.answerMagic {
            var body = rest[...]
            guard let address = Self.readAddress(&body) else { return nil }
            if body.isEmpty {
                self = .answer(transaction: transaction, address: address)
            } else if body.count == AddressProofs.size {
                self = .answer(transaction: transaction, address: address, proof: Array(body))
            } else if body == [0] {
                self = .testAnswer(transaction: transaction, address: address, other: nil)
            } else if body.first == 4, let other = Self.readAddress(&body), body.isEmpty {
                self = .testAnswer(transaction: transaction, address: address, other: other)
            } else {
                return nil
            }
        } else {
            return nil
        }
    }

    /// Reads family, port and address (IPv4 or IPv6); `nil` for anything else.
    private static func readAddress(_ body: inout ArraySlice<UInt8>) -> HostPort? {
        guard let family = body.first else { return nil }
        let length = family == 4 ? 4 : family == 6 ? 16 : -1
        guard length > 0, body.count >= 3 + length else { return nil }
        let start = body.startIndex
        let port = Int(body[start + 1]) << 8 | Int(body[start + 2])
        let octets = Array(body[(start + 3)..<(start + 3 + length)])
        body = body.dropFirst(3 + length)
        guard port > 0 else { return nil }
        if family == 4 { return HostPort(host: octets.map(String.init).joined(separator: "."), port: port) }
        guard let address = try? SocketAddress(packedIPAddress: ByteBuffer(bytes: octets), port: 0), let text = address.ipAddress else { return nil }
        return HostPort(host: text, port: port)
    }

    /// Family, port and address; `nil` for a host that is not an IP address.
    private static func encode(_ address: HostPort) -> [UInt8]? {
        guard (1...65535).contains(address.port),
              let socket = try? SocketAddress(ipAddress: address.host, port: address.port) else { return nil }
        let port = [UInt8(address.port >> 8), UInt8(address.port & 0xFF)]
        switch socket {
        case .v4(let v4):
            return [4] + port + withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }   // network order
        case .v6(let v6):
            return [6] + port + withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        case .unixDomainSocket:
            return nil
        }
    }

    /// The datagram; `nil` for an answer whose address is not an IP address.
    package var bytes: [UInt8]? {
        switch self {
        case .request(let transaction):
            precondition(transaction.count == Self.transactionSize)
            return Self.requestMagic + transaction + [UInt8](repeating: 0, count: Self.requestSize - 4 - Self.transactionSize)
        case .test(let transaction, let test):
            precondition(transaction.count == Self.transactionSize && test.delay <= NATTest.maximumDelay)
            let flags: UInt8 = 0x80 | (test.changePort ? 0x01 : 0) | (test.changeAddress ? 0x02 : 0)
            return Self.requestMagic + transaction + [flags, UInt8(test.delay >> 8), UInt8(test.delay & 0xFF)]
                + [UInt8](repeating: 0, count: Self.requestSize - 4 - Self.transactionSize - 3)
        case .answer(let transaction, let address, let proof):
            precondition(transaction.count == Self.transactionSize && (proof == nil || proof?.count == AddressProofs.size))
            return Self.encode(address).map { Self.answerMagic + transaction + $0 + (proof ?? []) }
        case .testAnswer(let transaction, let address, let other):
            precondition(transaction.count == Self.transactionSize)
            guard let mapped = Self.encode(address) else { return nil }
            // Only an IPv4 other address fits within a request's size after an IPv6 mapping.
            let otherBytes = other.flatMap(Self.encode).flatMap { $0.first == 4 ? $0 : nil } ?? [0]
            return Self.answerMagic + transaction + mapped + otherBytes
        }
    }
}

/// The datagram a listener sends towards a connecting node to open its own NAT for
/// the node's mapping (the original's payload). PTCP ignores it: it is shorter than
/// any PTCP header.
enum NATSeed {
    static let bytes: [UInt8] = Array("NAT!".utf8)
}

import NIOCore

/// Address discovery over UDP (docs/nat-traversal.md): a node asks its presence
/// server, from the very socket its PTCP connections use, which address and port the
/// server sees — the node's NAT mapping. Our own exchange, simpler than STUN and
/// distinguishable from PTCP by its first byte (PTCP's is its wire version, 3):
///
///     request  44 bytes: "Q2Q?" | transaction id (12) | zeros (28)
///     answer   23 or 35: "Q2Q=" | transaction id (12) | family 4 or 6 (1) | port (2) | address (4 or 16)
///
/// A request is padded to be at least as long as any answer, so a server never sends
/// more than it received: spoofed requests cannot use it to amplify traffic.
enum AddressDiscoveryMessage: Equatable, Sendable {
    case request(transaction: [UInt8])
    case answer(transaction: [UInt8], address: HostPort)

    static let requestMagic: [UInt8] = Array("Q2Q?".utf8)
    static let answerMagic: [UInt8] = Array("Q2Q=".utf8)
    static let transactionSize = 12
    static let requestSize = 44

    /// Parses a datagram; `nil` for anything that is not exactly one of the two forms.
    init?(decoding bytes: some Collection<UInt8>) {
        let bytes = Array(bytes.prefix(Self.requestSize + 1))
        guard bytes.count >= 4 + Self.transactionSize else { return nil }
        let magic = Array(bytes[0..<4])
        let transaction = Array(bytes[4..<(4 + Self.transactionSize)])
        let rest = bytes[(4 + Self.transactionSize)...]
        if magic == Self.requestMagic {
            guard bytes.count == Self.requestSize, rest.allSatisfy({ $0 == 0 }) else { return nil }
            self = .request(transaction: transaction)
        } else if magic == Self.answerMagic {
            guard let family = rest.first else { return nil }
            let body = Array(rest.dropFirst())
            let host: String
            switch (family, body.count) {
            case (4, 2 + 4):
                host = body[2...].map(String.init).joined(separator: ".")
            case (6, 2 + 16):
                guard let address = try? SocketAddress(packedIPAddress: ByteBuffer(bytes: body[2...]), port: 0),
                      let text = address.ipAddress else { return nil }
                host = text
            default:
                return nil
            }
            let port = Int(body[0]) << 8 | Int(body[1])
            guard port > 0 else { return nil }
            self = .answer(transaction: transaction, address: HostPort(host: host, port: port))
        } else {
            return nil
        }
    }

    /// The datagram; `nil` for an answer whose address is not an IP address.
    var bytes: [UInt8]? {
        switch self {
        case .request(let transaction):
            precondition(transaction.count == Self.transactionSize)
            return Self.requestMagic + transaction + [UInt8](repeating: 0, count: Self.requestSize - 4 - Self.transactionSize)
        case .answer(let transaction, let address):
            precondition(transaction.count == Self.transactionSize)
            guard (1...65535).contains(address.port),
                  let socket = try? SocketAddress(ipAddress: address.host, port: address.port) else { return nil }
            let port = [UInt8(address.port >> 8), UInt8(address.port & 0xFF)]
            switch socket {
            case .v4(let v4):
                let octets = withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }   // network order
                return Self.answerMagic + transaction + [4] + port + octets
            case .v6(let v6):
                let octets = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
                return Self.answerMagic + transaction + [6] + port + octets
            case .unixDomainSocket:
                return nil
            }
        }
    }
}

/// The datagram a listener sends towards a connecting node to open its own NAT for
/// the node's mapping (the original's payload). PTCP ignores it: it is shorter than
/// any PTCP header.
enum NATSeed {
    static let bytes: [UInt8] = Array("NAT!".utf8)
}

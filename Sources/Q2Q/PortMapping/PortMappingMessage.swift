import NIOCore

/// Which transport a port mapping is for.
public enum PortMappingProtocol: String, Sendable, Hashable, CustomStringConvertible {
    case udp, tcp

    /// NAT-PMP's opcode for mapping this protocol (RFC 6886 §3.3).
    var natPMPOpcode: UInt8 { self == .udp ? 1 : 2 }
    /// The IANA protocol number PCP names it by (RFC 6887 §11.1).
    var ianaNumber: UInt8 { self == .udp ? 17 : 6 }

    public var description: String { rawValue }
}

/// NAT-PMP (RFC 6886) requests and answers: the home gateway's public address, and
/// mapping a UDP or TCP port. Version 0; requests go to the gateway's port 5351.
///
///     public address   request 2:  version 0 | opcode 0
///                      answer 12:  0 | 128 | result (2) | epoch (4) | IPv4 address (4)
///     map              request 12: 0 | 1 (UDP) or 2 (TCP) | 0 (2) | internal port (2) | suggested external port (2) | lifetime (4)
///                      answer 16:  0 | 128 + opcode | result (2) | epoch (4) | internal port (2) | external port (2) | lifetime (4)
///
/// An answer whose result is not 0 may be cut after the epoch (8 bytes): the RFC leaves
/// the rest undefined, and gateways send it short.
package enum NATPMPMessage: Equatable, Sendable {
    case publicAddressRequest
    case mapRequest(PortMappingProtocol, internalPort: UInt16, suggestedExternalPort: UInt16, lifetime: UInt32)
    case publicAddressAnswer(epoch: UInt32, address: [UInt8])
    case mapAnswer(PortMappingProtocol, epoch: UInt32, internalPort: UInt16, externalPort: UInt16, lifetime: UInt32)
    /// An answer with a result other than success, to the request of `opcode`.
    case failure(opcode: UInt8, result: NATPMPResult, epoch: UInt32)

    static let version: UInt8 = 0
    static let serverPort = 5351
    /// The longest datagram either side sends; anything longer is not NAT-PMP.
    package static let maximumSize = 16

    package init(decoding bytes: some Collection<UInt8>) throws(PortMappingError) {
        guard bytes.count <= Self.maximumSize else { throw .malformed("a NAT-PMP message of \(bytes.count) bytes (at most 16)") }
        var buffer = ByteBuffer(bytes: Array(bytes))
        guard let version = buffer.readInteger(as: UInt8.self), let opcode = buffer.readInteger(as: UInt8.self) else {
            throw .malformed("a NAT-PMP message of \(bytes.count) bytes")
        }
        guard version == Self.version else { throw .malformed("NAT-PMP version \(version)") }
        func exactly(_ size: Int) throws(PortMappingError) {
            guard bytes.count == size else { throw .malformed("a NAT-PMP message of opcode \(opcode) with \(bytes.count) bytes (not \(size))") }
        }
        switch opcode {
        case 0:
            try exactly(2)
            self = .publicAddressRequest
        case 1, 2:
            try exactly(12)
            let proto: PortMappingProtocol = opcode == 1 ? .udp : .tcp
            guard buffer.readInteger(as: UInt16.self) == 0,
                  let (inner, outer, lifetime) = buffer.readMultipleIntegers(as: (UInt16, UInt16, UInt32).self) else {
                throw .malformed("a NAT-PMP map request whose reserved field is not zero")
            }
            self = .mapRequest(proto, internalPort: inner, suggestedExternalPort: outer, lifetime: lifetime)
        case 128, 129, 130:
            guard bytes.count >= 8, let (code, epoch) = buffer.readMultipleIntegers(as: (UInt16, UInt32).self) else {
                throw .malformed("a NAT-PMP answer of \(bytes.count) bytes")
            }
            let result = NATPMPResult(rawValue: code)
            if result != .success {
                self = .failure(opcode: opcode - 128, result: result, epoch: epoch)
            } else if opcode == 128 {
                try exactly(12)
                self = .publicAddressAnswer(epoch: epoch, address: buffer.readBytes(length: 4)!)
            } else {
                try exactly(16)
                let (inner, outer, lifetime) = buffer.readMultipleIntegers(as: (UInt16, UInt16, UInt32).self)!
                self = .mapAnswer(opcode == 129 ? .udp : .tcp, epoch: epoch, internalPort: inner, externalPort: outer, lifetime: lifetime)
            }
        default:
            throw .malformed("NAT-PMP opcode \(opcode)")
        }
    }

    package var bytes: [UInt8] {
        var buffer = ByteBuffer()
        switch self {
        case .publicAddressRequest:
            buffer.writeMultipleIntegers(Self.version, UInt8(0))
        case .mapRequest(let proto, let inner, let outer, let lifetime):
            buffer.writeMultipleIntegers(Self.version, proto.natPMPOpcode, UInt16(0), inner, outer, lifetime)
        case .publicAddressAnswer(let epoch, let address):
            precondition(address.count == 4)
            buffer.writeMultipleIntegers(Self.version, UInt8(128), NATPMPResult.success.rawValue, epoch)
            buffer.writeBytes(address)
        case .mapAnswer(let proto, let epoch, let inner, let outer, let lifetime):
            buffer.writeMultipleIntegers(Self.version, 128 + proto.natPMPOpcode, NATPMPResult.success.rawValue, epoch, inner, outer, lifetime)
        case .failure(let opcode, let result, let epoch):
            buffer.writeMultipleIntegers(Self.version, 128 &+ opcode, result.rawValue, epoch)
        }
        return Array(buffer.readableBytesView)
    }
}

/// A NAT-PMP result code (RFC 6886 §3.5).
package struct NATPMPResult: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package var rawValue: UInt16
    package init(rawValue: UInt16) { self.rawValue = rawValue }

    static let success = NATPMPResult(rawValue: 0)
    static let unsupportedVersion = NATPMPResult(rawValue: 1)
    static let notAuthorized = NATPMPResult(rawValue: 2)
    static let networkFailure = NATPMPResult(rawValue: 3)
    static let outOfResources = NATPMPResult(rawValue: 4)
    static let unsupportedOpcode = NATPMPResult(rawValue: 5)

    package var description: String {
        switch self {
        case .success: "success"
        case .unsupportedVersion: "unsupported version"
        case .notAuthorized: "not authorized or refused (mapping turned off on the gateway?)"
        case .networkFailure: "network failure (the gateway has no public address yet)"
        case .outOfResources: "out of resources (no ports left)"
        case .unsupportedOpcode: "unsupported opcode"
        default: "result \(rawValue)"
        }
    }
}

/// PCP (RFC 6887) MAP requests and answers, the part of PCP a node needs: a mapping of
/// one inner port, renewed and deleted with the same nonce. Version 2.
///
///     header   request 24: 2 | R=0, opcode | 0 (2) | lifetime (4) | client's IP address (16)
///              answer 24:  2 | R=1, opcode | 0 | result (1) | lifetime (4) | epoch (4) | 0 (12)
///     MAP      36:  nonce (12) | protocol (1) | 0 (3) | internal port (2) | external port (2) | outer IP address (16)
///
/// Addresses are IPv6, IPv4 as `::ffff:a.b.c.d`. Options after the MAP payload are
/// skipped (none is needed to map a port).
package struct PCPMapMessage: Equatable, Sendable {
    var isAnswer: Bool
    /// In an answer; `.success` in a request.
    var result: PCPResult
    var lifetime: UInt32
    /// In an answer; 0 in a request.
    var epoch: UInt32
    /// In a request: the address the request is sent from; unused (zero) in an answer.
    var clientAddress: [UInt8]
    var nonce: [UInt8]
    var proto: PortMappingProtocol
    var internalPort: UInt16
    /// Suggested (request) or assigned (answer).
    var externalPort: UInt16
    var externalAddress: [UInt8]

    static let version: UInt8 = 2
    static let mapOpcode: UInt8 = 1
    static let headerSize = 24
    package static let size = 60
    /// The longest PCP message (RFC 6887 §7).
    package static let maximumSize = 1100
    static let nonceSize = 12

    init(isAnswer: Bool, result: PCPResult = .success, lifetime: UInt32, epoch: UInt32 = 0, clientAddress: [UInt8] = .init(repeating: 0, count: 16),
         nonce: [UInt8], proto: PortMappingProtocol, internalPort: UInt16, externalPort: UInt16,
         externalAddress: [UInt8] = .init(repeating: 0, count: 16)) {
        precondition(clientAddress.count == 16 && externalAddress.count == 16 && nonce.count == Self.nonceSize)
        self.isAnswer = isAnswer
        self.result = result
        self.lifetime = lifetime
        self.epoch = epoch
        self.clientAddress = clientAddress
        self.nonce = nonce
        self.proto = proto
        self.internalPort = internalPort
        self.externalPort = externalPort
        self.externalAddress = externalAddress
    }

    /// Decodes a MAP request or answer. An answer with an error result may come without
    /// the MAP payload (a gateway that did not understand the request): then only the
    /// header's fields are meaningful, and the rest is zero.
    package init(decoding bytes: some Collection<UInt8>) throws(PortMappingError) {
        guard bytes.count <= Self.maximumSize else { throw .malformed("a PCP message of \(bytes.count) bytes (at most 1,100)") }
        guard bytes.count >= Self.headerSize, bytes.count % 4 == 0 else { throw .malformed("a PCP message of \(bytes.count) bytes") }
        var buffer = ByteBuffer(bytes: Array(bytes))
        let (version, rOpcode) = buffer.readMultipleIntegers(as: (UInt8, UInt8).self)!
        guard version == Self.version else { throw .malformed("PCP version \(version)") }
        let isAnswer = rOpcode & 0x80 != 0
        guard rOpcode & 0x7f == Self.mapOpcode else { throw .malformed("PCP opcode \(rOpcode & 0x7f), not MAP") }
        var result = PCPResult.success
        var epoch: UInt32 = 0
        var client = [UInt8](repeating: 0, count: 16)
        let lifetime: UInt32
        if isAnswer {
            let (_, code, life, time) = buffer.readMultipleIntegers(as: (UInt8, UInt8, UInt32, UInt32).self)!
            result = PCPResult(rawValue: code)
            lifetime = life
            epoch = time
            buffer.moveReaderIndex(forwardBy: 12)
        } else {
            guard buffer.readInteger(as: UInt16.self) == 0 else { throw .malformed("a PCP request whose reserved field is not zero") }
            lifetime = buffer.readInteger(as: UInt32.self)!
            client = buffer.readBytes(length: 16)!
        }
        guard buffer.readableBytes >= Self.size - Self.headerSize else {
            guard isAnswer, result != .success else { throw .malformed("a PCP MAP message of \(bytes.count) bytes (at least 60)") }
            self.init(isAnswer: true, result: result, lifetime: lifetime, epoch: epoch, nonce: .init(repeating: 0, count: Self.nonceSize),
                      proto: .udp, internalPort: 0, externalPort: 0)
            return
        }
        let nonce = buffer.readBytes(length: Self.nonceSize)!
        let (protocolNumber, _, _, _, inner, outer) = buffer.readMultipleIntegers(as: (UInt8, UInt8, UInt8, UInt8, UInt16, UInt16).self)!
        let proto: PortMappingProtocol
        switch protocolNumber {
        case PortMappingProtocol.udp.ianaNumber: proto = .udp
        case PortMappingProtocol.tcp.ianaNumber: proto = .tcp
        default: throw .malformed("a PCP mapping of protocol \(protocolNumber)")
        }
        self.init(isAnswer: isAnswer, result: result, lifetime: lifetime, epoch: epoch, clientAddress: client, nonce: nonce, proto: proto,
                  internalPort: inner, externalPort: outer, externalAddress: buffer.readBytes(length: 16)!)
    }

    package var bytes: [UInt8] {
        var buffer = ByteBuffer()
        if isAnswer {
            buffer.writeMultipleIntegers(Self.version, Self.mapOpcode | 0x80, UInt8(0), result.rawValue, lifetime, epoch)
            buffer.writeRepeatingByte(0, count: 12)
        } else {
            buffer.writeMultipleIntegers(Self.version, Self.mapOpcode, UInt16(0), lifetime)
            buffer.writeBytes(clientAddress)
        }
        buffer.writeBytes(nonce)
        buffer.writeMultipleIntegers(proto.ianaNumber, UInt8(0), UInt8(0), UInt8(0), internalPort, externalPort)
        buffer.writeBytes(externalAddress)
        return Array(buffer.readableBytesView)
    }

    /// An IPv4 address as PCP carries it (`::ffff:a.b.c.d`).
    static func mapped(ipv4 address: [UInt8]) -> [UInt8] {
        precondition(address.count == 4)
        return [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + address
    }

    /// The IPv4 address inside `::ffff:a.b.c.d`, if it is one.
    static func ipv4(inside address: [UInt8]) -> [UInt8]? {
        guard address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xff, address[11] == 0xff else { return nil }
        return Array(address[12...])
    }
}

/// A PCP result code (RFC 6887 §7.4).
package struct PCPResult: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package var rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }

    static let success = PCPResult(rawValue: 0)
    static let unsupportedVersion = PCPResult(rawValue: 1)
    static let notAuthorized = PCPResult(rawValue: 2)
    static let malformedRequest = PCPResult(rawValue: 3)
    static let unsupportedOpcode = PCPResult(rawValue: 4)
    static let unsupportedOption = PCPResult(rawValue: 5)
    static let malformedOption = PCPResult(rawValue: 6)
    static let networkFailure = PCPResult(rawValue: 7)
    static let noResources = PCPResult(rawValue: 8)
    static let unsupportedProtocol = PCPResult(rawValue: 9)
    static let userExceededQuota = PCPResult(rawValue: 10)
    static let cannotProvideExternal = PCPResult(rawValue: 11)
    static let addressMismatch = PCPResult(rawValue: 12)
    static let excessiveRemotePeers = PCPResult(rawValue: 13)

    package var description: String {
        switch self {
        case .success: "success"
        case .unsupportedVersion: "unsupported version"
        case .notAuthorized: "not authorized (mapping turned off on the gateway?)"
        case .malformedRequest: "malformed request"
        case .unsupportedOpcode: "unsupported opcode"
        case .unsupportedOption: "unsupported option"
        case .malformedOption: "malformed option"
        case .networkFailure: "network failure (the gateway has no public address yet)"
        case .noResources: "no resources left on the gateway"
        case .unsupportedProtocol: "unsupported protocol"
        case .userExceededQuota: "mapping quota exceeded"
        case .cannotProvideExternal: "cannot provide that outer port"
        case .addressMismatch: "address mismatch (a NAT between us and the gateway?)"
        case .excessiveRemotePeers: "excessive remote peers"
        default: "result \(rawValue)"
        }
    }
}

/// Why a port could not be mapped.
public enum PortMappingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The host has no default IPv4 gateway to ask.
    case noGateway
    /// The gateway answered nothing we could use within the deadline.
    case noAnswer(gateway: String)
    /// The gateway refused (a NAT-PMP or PCP result code, worded).
    case refused(protocolName: String, result: String)
    /// A datagram that is not a well-formed answer.
    case malformed(String)

    public var description: String {
        switch self {
        case .noGateway: "no default IPv4 gateway to ask for a port mapping"
        case .noAnswer(let gateway): "the gateway \(gateway) does not answer NAT-PMP or PCP"
        case .refused(let name, let result): "the gateway refused the \(name) mapping: \(result)"
        case .malformed(let what): "not a port-mapping answer: \(what)"
        }
    }
}

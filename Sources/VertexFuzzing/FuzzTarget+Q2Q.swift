import AMP
import NIOCore
import Q2Q

extension FuzzTarget {
    /// Q2Q's argument types (addresses, host:port, methods, times, certificates and
    /// requests): what decodes re-encodes to bytes that decode to the same value.
    static let q2qArguments = FuzzTarget("q2q-arguments", "Q2Q argument types: address, host:port, methods, time, certificate, certificate request") { input in
        let selector = input.byte()
        let value = ByteBuffer(bytes: input.rest())
        switch selector % 7 {
        case 0: checkArgument(Q2QAddress.self, value)
        case 1: checkArgument(HostPort.self, value)
        case 2: checkArgument(Q2QMethod.self, value)
        case 3: checkArgument([Q2QMethod].self, value)
        case 4: checkArgument(AmpTime.self, value)
        case 5: checkArgument(Q2QCertificate.self, value)
        default: checkArgument(Q2QCertificateRequest.self, value)
        }
    }

    /// Address discovery and NAT test datagrams: exactly one of the forms or nothing; a
    /// form re-encodes to a datagram that decodes to it; no answer is longer than a
    /// request (the server never amplifies).
    static let addressDiscovery = FuzzTarget("address-discovery", "address discovery and NAT test datagrams (UDP)") { input in
        let datagram = input.rest()
        guard let message = AddressDiscoveryMessage(decoding: datagram) else { return }
        guard let bytes = message.bytes else {
            fail("\(message), decoded, does not encode")
        }
        require(bytes.count <= AddressDiscoveryMessage.requestSize, "\(message) encodes to \(bytes.count) bytes, more than a request")
        require(AddressDiscoveryMessage(decoding: bytes) == message, "\(message) does not survive encode → decode")
    }

    /// NAT-PMP and PCP answers from a gateway (and requests): a message or a typed
    /// error; a message re-encodes within its protocol's sizes and decodes to itself.
    static let portMapping = FuzzTarget("port-mapping", "NAT-PMP and PCP messages (UDP from the gateway)") { input in
        let datagram = input.rest()
        if let message = try? NATPMPMessage(decoding: datagram) {
            let bytes = message.bytes
            require(bytes.count <= NATPMPMessage.maximumSize, "NAT-PMP \(message) encodes to \(bytes.count) bytes")
            require((try? NATPMPMessage(decoding: bytes)) == message, "NAT-PMP \(message) does not survive encode → decode")
        }
        if let message = try? PCPMapMessage(decoding: datagram) {
            let bytes = message.bytes
            require(bytes.count == PCPMapMessage.size, "PCP \(message) encodes to \(bytes.count) bytes")
            require((try? PCPMapMessage(decoding: bytes)) == message, "PCP \(message) does not survive encode → decode")
        }
    }
}

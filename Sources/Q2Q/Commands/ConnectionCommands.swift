import AMP
import NIOCore

// Commands that set up connections between nodes (spec/q2q-reference.md §4), with the
// original's wire names and keys.

/// `listen`: the caller, authenticated as `From`, accepts connections for `protocols`.
public enum Listen: AMPCommand {
    public static let name = "listen"
    public struct Arguments: Codable, Sendable {
        public var from: Q2QAddress
        /// AMP `ListOf(String)`: service names as bytes.
        public var protocols: [AMPBytes]
        public var description: String
        /// Ours, optional: the listener's `tcp@` paths, which its presence server gives
        /// callers at once (`direct-paths`), before `inbound` has asked the listener.
        public var direct: [Q2QMethod]?

        public init(from: Q2QAddress, protocols: [String], description: String, direct: [Q2QMethod]? = nil) {
            self.from = from
            self.protocols = protocols.map { AMPBytes(Array($0.utf8)) }
            self.description = description
            self.direct = direct
        }

        public var services: [String] { protocols.map { String(buffer: $0.buffer) } }

        enum CodingKeys: String, CodingKey {
            case from = "From"
            case protocols, description, direct
        }
    }
    public typealias Failure = PresenceError
}

/// One way in to a listener, as `inbound` answers it.
public struct ListenerOffer: Codable, Sendable, Hashable {
    /// Claims this listener on a new path (`Retrieve-Connection`); single use, short-lived.
    public var id: [UInt8]
    /// The listener's own certificate, as the presence server saw it.
    public var certificate: Q2QCertificate?
    public var methods: [Q2QMethod]
    public var expires: AmpTime
    public var description: String

    public init(id: String, certificate: Q2QCertificate? = nil, methods: [Q2QMethod], expires: AmpTime, description: String) {
        self.id = Array(id.utf8)
        self.certificate = certificate
        self.methods = methods
        self.expires = expires
        self.description = description
    }

    public var identifier: String { String(decoding: id, as: UTF8.self) }
}

/// `direct-paths` (ours): the `tcp@` paths that `to`'s listeners of `protocol`
/// registered with `listen`, answered by the presence server at once. A caller starts
/// TCP and TLS on them while `inbound` asks the listeners for an offer, and claims the
/// offer's id once it arrives: a round trip sooner than waiting for `inbound`.
public enum DirectPathsQuery: AMPCommand {
    public static let name = "direct-paths"
    public struct Arguments: Codable, Sendable {
        public var from: Q2QAddress
        public var to: Q2QAddress
        public var `protocol`: [UInt8]

        public init(from: Q2QAddress, to: Q2QAddress, service: String) {
            self.from = from
            self.to = to
            self.protocol = Array(service.utf8)
        }

        public var service: String { String(decoding: `protocol`, as: UTF8.self) }

        enum CodingKeys: String, CodingKey {
            case from = "From"
            case to, `protocol`
        }
    }
    public struct Response: Codable, Sendable {
        public var methods: [Q2QMethod]
        /// Whether anyone listens as `to` for the service (ours): a listener reachable
        /// only through the relay registers no direct path. Absent from older servers.
        public var listening: Bool?
        public init(methods: [Q2QMethod], listening: Bool? = nil) {
            self.methods = methods
            self.listening = listening
        }
    }
    public typealias Failure = ConnectionError
}

/// `inbound`: "`From` wants `to`'s `protocol`": every listener with its methods.
public enum Inbound: AMPCommand {
    public static let name = "inbound"
    public struct Arguments: Codable, Sendable {
        public var from: Q2QAddress
        public var to: Q2QAddress
        public var `protocol`: [UInt8]
        /// The caller's UDP address (its NAT mapping) for PTCP over IPv4, where listeners
        /// seed their NATs towards and connect back to.
        public var udpSource: HostPort?
        /// Ours: the caller's UDP address for PTCP over IPv6 (no NAT: its own address,
        /// which the listener's firewall must be opened towards all the same).
        public var udpSource6: HostPort?
        /// Ours, from the caller to its presence server only: the server's proofs
        /// (``AddressProofs``) that its address-discovery answers reached `udp_source` and
        /// `udp_source6`. An address without a proof is passed on only when it is the
        /// one the caller's connection comes from.
        public var udpProof: [UInt8]?
        public var udpProof6: [UInt8]?
        /// Ours, from a presence server to a listening node only: the CA the server
        /// verified `From` with. A listener learns callers' CAs this way, from its own
        /// authenticated server, instead of fetching them in clear when a stranger's
        /// TLS handshake names a domain.
        public var callerAuthority: Q2QCertificate?

        public init(from: Q2QAddress, to: Q2QAddress, service: String, udpSource: HostPort? = nil,
                    callerAuthority: Q2QCertificate? = nil) {
            self.from = from
            self.to = to
            self.protocol = Array(service.utf8)
            self.udpSource = udpSource
            self.callerAuthority = callerAuthority
        }

        init(from: Q2QAddress, to: Q2QAddress, service: String, udpSources: [DiscoveredAddress]) {
            self.init(from: from, to: to, service: service)
            for source in udpSources {
                if AddressFamily(host: source.address.host) == .v6 {
                    (udpSource6, udpProof6) = (source.address, source.proof)
                } else {
                    (udpSource, udpProof) = (source.address, source.proof)
                }
            }
        }

        public var service: String { String(decoding: `protocol`, as: UTF8.self) }

        enum CodingKeys: String, CodingKey {
            case from = "From"
            case to, `protocol`
            case udpSource = "udp_source"
            case udpSource6 = "udp_source6"
            case udpProof = "udp_proof"
            case udpProof6 = "udp_proof6"
            case callerAuthority = "caller_ca"
        }
    }
    public struct Response: Codable, Sendable {
        public var listeners: [ListenerOffer]
        public init(listeners: [ListenerOffer]) { self.listeners = listeners }
    }
    public typealias Failure = ConnectionError
}

/// `Retrieve-Connection`: on a new path, claim the listener id; after the answer the
/// path belongs to the application.
public enum RetrieveConnection: AMPCommand {
    public static let name = "Retrieve-Connection"
    public struct Arguments: Codable, Sendable {
        public var identifier: [UInt8]
        public init(identifier: String) { self.identifier = Array(identifier.utf8) }
        public var text: String { String(decoding: identifier, as: UTF8.self) }
    }
    public typealias Failure = ConnectionError
}

/// `bind-udp`: "listener `q2qsrc`, open a UDP path from your port `udpsrc` towards
/// `udpdst`" — sent by the connecting node `q2qdst` to the presence server, which passes
/// it to the listening node. The original's listener sent one `NAT!` datagram from
/// that port, and the caller then connected; ours connects back with PTCP (the
/// listener's SYN opens its own NAT), which also reaches a caller whose listener sits
/// behind a NAT that maps every destination to a new port (docs/nat-traversal.md).
public enum BindUDP: AMPCommand {
    public static let name = "bind-udp"
    public struct Arguments: Codable, Sendable {
        public var `protocol`: [UInt8]
        public var q2qsrc: Q2QAddress
        public var q2qdst: Q2QAddress
        public var udpsrc: HostPort
        public var udpdst: HostPort

        public init(service: String, listener: Q2QAddress, caller: Q2QAddress, from udpsrc: HostPort, to udpdst: HostPort) {
            self.protocol = Array(service.utf8)
            self.q2qsrc = listener
            self.q2qdst = caller
            self.udpsrc = udpsrc
            self.udpdst = udpdst
        }

        public var service: String { String(decoding: `protocol`, as: UTF8.self) }
    }
    public typealias Failure = ConnectionError
}

/// Declared errors of the connection commands.
public enum ConnectionError: AMPDeclaredError, Hashable, CustomStringConvertible {
    /// `inbound`: nobody listens as that address for that service.
    case notFound(String)
    /// `inbound`: the caller is not who it claims (fatal, as in the original).
    case verifyError(String)
    /// `Retrieve-Connection`: unknown, used or expired listener id (fatal, as in the original).
    case noSuchConnection(String)
    /// `bind-udp`: no listener could open the asked-for UDP path.
    case connectionError(String)

    public var code: String {
        switch self {
        case .notFound: return "NotFound"
        case .verifyError: return "VerifyError"
        case .noSuchConnection: return "NoSuchConnection"
        case .connectionError: return "ConnectionError"
        }
    }

    public var errorDescription: String {
        switch self {
        case .notFound(let text), .verifyError(let text), .noSuchConnection(let text), .connectionError(let text): return text
        }
    }

    public var isFatal: Bool {
        switch self {
        case .notFound, .connectionError: return false
        case .verifyError, .noSuchConnection: return true
        }
    }

    public init?(code: String, description: String) {
        switch code {
        case "NotFound": self = .notFound(description)
        case "VerifyError": self = .verifyError(description)
        case "NoSuchConnection": self = .noSuchConnection(description)
        case "ConnectionError": self = .connectionError(description)
        default: return nil
        }
    }

    public var description: String { "\(code): \(errorDescription)" }
}

import AMP

// The presence server's commands, with the original's wire names and argument keys
// (spec/q2q-reference.md §4). Swift names follow the wire names.

/// `identify`: the self-signed CA certificate of a domain (sent in clear).
public enum Identify: AMPCommand {
    public static let name = "identify"
    public struct Arguments: Codable, Sendable {
        public var subject: Q2QAddress
        public init(subject: Q2QAddress) { self.subject = subject }
    }
    public struct Response: Codable, Sendable {
        public var certificate: Q2QCertificate
        public init(certificate: Q2QCertificate) { self.certificate = certificate }
    }
    public typealias Failure = PresenceError
}

/// `secure`: switch the connection to TLS. With `authorize`, the caller presents the
/// certificate of `From` and the server verifies it; without, the caller stays unknown
/// (used to obtain a first certificate).
public enum Secure: AMPCommand {
    public static let name = "secure"
    public struct Arguments: Codable, Sendable {
        public var from: Q2QAddress?
        public var to: Q2QAddress
        public var authorize: Bool

        public init(from: Q2QAddress?, to: Q2QAddress, authorize: Bool) {
            self.from = from
            self.to = to
            self.authorize = authorize
        }

        enum CodingKeys: String, CodingKey {
            case from = "From"
            case to, authorize
        }
    }
    public typealias Failure = PresenceError
}

/// `sign`: a certificate for the request's address, against the user's password.
public enum Sign: AMPCommand {
    public static let name = "sign"
    public struct Arguments: Codable, Sendable {
        public var certificateRequest: Q2QCertificateRequest
        public var password: [UInt8]

        public init(certificateRequest: Q2QCertificateRequest, password: [UInt8]) {
            self.certificateRequest = certificateRequest
            self.password = password
        }

        enum CodingKeys: String, CodingKey {
            case certificateRequest = "certificate_request"
            case password
        }
    }
    public struct Response: Codable, Sendable {
        public var certificate: Q2QCertificate
        public init(certificate: Q2QCertificate) { self.certificate = certificate }
    }
    public typealias Failure = PresenceError
}

/// `Who-Am-I`: the caller's address and port as the server sees them.
public enum WhoAmI: AMPCommand {
    public static let name = "Who-Am-I"
    public typealias Arguments = AMPEmpty
    public struct Response: Codable, Sendable {
        public var address: HostPort
        public init(address: HostPort) { self.address = address }
    }
}

extension AMPResponders {
    /// Answers `Who-Am-I` with the caller's address as this side sees it (presence
    /// servers and listeners' direct paths both answer it).
    mutating func registerWhoAmI() {
        registerImmediate(WhoAmI.self) { _, context in
            guard let address = context.remoteAddress.flatMap(HostPort.init) else {
                throw PresenceError.verifyError("the caller's address is unknown")
            }
            return WhoAmI.Response(address: address)
        }
    }
}

/// `source-ip`: the caller's IP as the server sees it.
public enum SourceIP: AMPCommand {
    public static let name = "source-ip"
    public typealias Arguments = AMPEmpty
    public struct Response: Codable, Sendable {
        /// AMP `String` (bytes) in the original; the text of an IP address.
        public var ip: [UInt8]
        public init(ip: String) { self.ip = Array(ip.utf8) }
        public var text: String { String(decoding: ip, as: UTF8.self) }
    }
}

/// `add_user`: open registration of `name` in the domain the connection was secured
/// for. Only when the operator turned open registration on, and only over TLS.
public enum AddUser: AMPCommand {
    public static let name = "add_user"
    public struct Arguments: Codable, Sendable {
        public var name: [UInt8]
        public var password: [UInt8]
        public init(name: String, password: [UInt8]) {
            self.name = Array(name.utf8)
            self.password = password
        }
    }
    public typealias Failure = PresenceError
}

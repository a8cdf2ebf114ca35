/// How the NAT in front of a node behaves (RFC 4787's terms), as RFC 5780's tests
/// against the presence server found it; what `vertex doctor` reports.
public struct NATBehaviour: Sendable, Codable, Equatable {
    /// How the NAT picks the public address of a new flow (RFC 4787 §4.1).
    public enum Mapping: String, Sendable, Codable {
        /// No NAT: the server sees our own address and port.
        case none
        /// One public port per local port, whatever the destination ("cone"): hole
        /// punching works.
        case endpointIndependent = "endpoint-independent"
        /// A new public port per destination address (not per port).
        case addressDependent = "address-dependent"
        /// A new public port per destination address and port ("symmetric"): hole
        /// punching fails unless the other side is public.
        case addressAndPortDependent = "address-and-port-dependent"
        /// Endpoint-independent towards the server's second port; whether it depends on
        /// the address needs a server with a second address.
        case endpointIndependentOrAddressDependent = "endpoint-independent or address-dependent"
    }

    /// Which packets from outside the NAT lets in to a mapping (RFC 4787 §5).
    public enum Filtering: String, Sendable, Codable {
        /// From anyone ("full cone", or no NAT and no firewall).
        case endpointIndependent = "endpoint-independent"
        /// From addresses we sent to, any port.
        case addressDependent = "address-dependent"
        /// Only from the address and port we sent to.
        case addressAndPortDependent = "address-and-port-dependent"
        /// From the server's other port; whether from other addresses needs a server
        /// with a second address.
        case endpointIndependentOrAddressDependent = "endpoint-independent or address-dependent"
    }

    /// Whether the server answered UDP at all.
    public var udpWorks: Bool
    /// Our address and port as the server saw them.
    public var mappedAddress: HostPort?
    public var mapping: Mapping?
    public var filtering: Filtering?
    /// Whether the public port equals the local one.
    public var portPreserved: Bool?
    /// Whether a datagram to our own public address came back to us.
    public var hairpinning: Bool?
    /// A mapping stayed open this long without traffic (the bounded probe's wait) —
    /// or, when `false`, did not.
    public var mappingLifetimeProbe: Double?
    public var mappingOutlivedProbe: Bool?
    /// Whether the server has a second address, without which some classes are
    /// reported as "endpoint-independent or address-dependent".
    public var serverHasSecondAddress: Bool

    public init(udpWorks: Bool = false, mappedAddress: HostPort? = nil, mapping: Mapping? = nil, filtering: Filtering? = nil,
                portPreserved: Bool? = nil, hairpinning: Bool? = nil, mappingLifetimeProbe: Double? = nil, mappingOutlivedProbe: Bool? = nil,
                serverHasSecondAddress: Bool = false) {
        self.udpWorks = udpWorks
        self.mappedAddress = mappedAddress
        self.mapping = mapping
        self.filtering = filtering
        self.portPreserved = portPreserved
        self.hairpinning = hairpinning
        self.mappingLifetimeProbe = mappingLifetimeProbe
        self.mappingOutlivedProbe = mappingOutlivedProbe
        self.serverHasSecondAddress = serverHasSecondAddress
    }

    /// RFC 5780 §4.3: the mapping class from the addresses the server saw for one
    /// local socket — towards its first address (`first`), its second address on the
    /// first port (`otherAddress`, nil without one) and on its second port (`otherBoth`;
    /// without a second address: the first address on the second port). `isLocal`:
    /// the first mapping is our own address (no NAT).
    public static func classifyMapping(first: HostPort, otherAddress: HostPort?, otherBoth: HostPort?, isLocal: Bool) -> Mapping? {
        if isLocal { return Mapping.none }
        if let otherAddress {
            if otherAddress == first { return .endpointIndependent }
            guard let otherBoth else { return nil }
            return otherBoth == otherAddress ? .addressDependent : .addressAndPortDependent
        }
        guard let otherBoth else { return nil }
        return otherBoth == first ? .endpointIndependentOrAddressDependent : .addressAndPortDependent
    }

    /// RFC 5780 §4.4: the filtering class from which answers came back — from the
    /// server's other address and port (nil when it has no second address), and from
    /// its first address's other port.
    public static func classifyFiltering(fromOtherAddressAndPort: Bool?, fromOtherPort: Bool) -> Filtering {
        if fromOtherAddressAndPort == true { return .endpointIndependent }
        if fromOtherPort { return fromOtherAddressAndPort == nil ? .endpointIndependentOrAddressDependent : .addressDependent }
        return .addressAndPortDependent
    }

    /// Whether peers can reach this node by hole punching in general: a mapping
    /// that keeps one public port per local port.
    public var punchable: Bool {
        switch mapping {
        case .none?, .endpointIndependent?, .endpointIndependentOrAddressDependent?: true
        default: false
        }
    }
}

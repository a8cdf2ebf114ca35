import Foundation
import NIOCore

/// The addresses of this host that peers can reach it at without a NAT in between:
/// its IPv6 addresses of global scope. Over IPv6 a host is seen at its own address
/// (its router is a firewall, not a NAT), so these are what a listener offers.
enum LocalAddresses {
    /// This host's global unicast IPv6 addresses (2000::/3), and with
    /// `includingUniqueLocal` its unique local ones (fc00::/7, reachable inside one
    /// organisation only); never link-local, loopback, multicast or IPv4-mapped ones.
    /// Sorted, without duplicates.
    static func ipv6(includingUniqueLocal: Bool = false) -> [String] {
        guard let devices = try? System.enumerateDevices() else { return [] }
        let addresses = devices.compactMap { device -> String? in
            guard case .v6(let address)? = device.address, isReachable(address.address.sin6_addr, includingUniqueLocal: includingUniqueLocal)
            else { return nil }
            return device.address?.ipAddress
        }
        return Array(Set(addresses)).sorted()
    }

    /// This host's IPv4 addresses but loopback and link-local ones (a LAN peer may reach
    /// them; beyond a NAT, nobody), sorted.
    static func ipv4() -> [String] {
        guard let devices = try? System.enumerateDevices() else { return [] }
        let addresses = devices.compactMap { device -> String? in
            guard case .v4(let address)? = device.address else { return nil }
            let first = withUnsafeBytes(of: address.address.sin_addr) { ($0[0], $0[1]) }
            guard first.0 != 127, first != (169, 254) else { return nil }
            return device.address?.ipAddress
        }
        return Array(Set(addresses)).sorted()
    }

    /// Whether an IPv6 address is one a peer elsewhere may reach (see ``ipv6(includingUniqueLocal:)``).
    static func isReachable(_ address: in6_addr, includingUniqueLocal: Bool) -> Bool {
        let first = withUnsafeBytes(of: address) { $0[0] }
        if first & 0xE0 == 0x20 { return true }                    // 2000::/3, global unicast
        return includingUniqueLocal && first & 0xFE == 0xFC         // fc00::/7, unique local
    }

    /// Whether `host` is an IPv6 address (as opposed to IPv4, or a name).
    static func isIPv6(_ host: String) -> Bool { host.contains(":") }
}

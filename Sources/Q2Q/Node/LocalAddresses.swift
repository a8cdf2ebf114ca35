import Foundation
import NIOCore

/// This host's own addresses, as offers and head starts need them: its IPv6 addresses
/// of global scope (over IPv6 a host is seen at its own address, its router being a
/// firewall, not a NAT, so these are what a listener offers), its IPv4 ones, and
/// whether a peer's address is on one of its links.
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

    /// Whether `host` is on one of this host's links: loopback, or inside the subnet of
    /// one of its addresses (its netmask's prefix). A peer there is reached without a
    /// NAT or router in between, so its `tcp@` path works as surely as PTCP.
    static func isOnLink(_ host: String) -> Bool {
        isOnLink(host, links: links())
    }

    /// This host's addresses with their netmasks (read once for several ``isOnLink(_:links:)``).
    static func links() -> [(address: SocketAddress, netmask: SocketAddress)] {
        ((try? System.enumerateDevices()) ?? []).compactMap { device in
            device.address.flatMap { address in device.netmask.map { (address: address, netmask: $0) } }
        }
    }

    /// ``isOnLink(_:)`` against the given addresses and their netmasks.
    static func isOnLink(_ host: String, links: [(address: SocketAddress, netmask: SocketAddress)]) -> Bool {
        guard let target = try? SocketAddress(ipAddress: host, port: 0) else { return false }
        let targetBytes = bytes(of: target)
        if host == "::1" || targetBytes.first == 127 && targetBytes.count == 4 { return true }
        return links.contains { link in
            let (own, mask) = (bytes(of: link.address), bytes(of: link.netmask))
            guard own.count == targetBytes.count, mask.count == own.count, mask.contains(where: { $0 != 0 }) else { return false }
            return zip(zip(own, targetBytes), mask).allSatisfy { pair, mask in pair.0 & mask == pair.1 & mask }
        }
    }

    /// The address's bytes in network order (4 or 16; none for a Unix socket).
    private static func bytes(of address: SocketAddress) -> [UInt8] {
        switch address {
        case .v4(let v4): withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6): withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        case .unixDomainSocket: []
        }
    }

    /// Whether `host` is an IPv6 address (as opposed to IPv4, or a name).
    static func isIPv6(_ host: String) -> Bool { host.contains(":") }
}

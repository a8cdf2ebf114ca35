import Foundation

/// The host's default IPv4 gateway: the router a port-mapping request goes to.
enum DefaultGateway {
    /// Read from Linux's `/proc/net/route`; `nil` elsewhere or without a default route.
    static func ipv4() -> String? {
        guard let table = try? String(contentsOfFile: "/proc/net/route", encoding: .utf8) else { return nil }
        return parse(procNetRoute: table)
    }

    /// The gateway of the first up (`RTF_UP`) default route with a gateway (`RTF_GATEWAY`)
    /// in `/proc/net/route`'s text: columns `Iface Destination Gateway Flags …`, the
    /// addresses in hexadecimal in the host's byte order (little-endian on every Linux
    /// Swift runs on).
    static func parse(procNetRoute table: String) -> String? {
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 4, fields[1] == "00000000",
                  let gateway = UInt32(fields[2], radix: 16), gateway != 0,
                  let flags = UInt16(fields[3], radix: 16), flags & 0x3 == 0x3 else { continue }
            let octets = (0..<4).map { (gateway >> (8 * UInt32($0))) & 0xff }
            return octets.map(String.init).joined(separator: ".")
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP port where connections are refused, and that no other test can take
/// while it is held: a socket bound to it that never listens. (Closing a listener to get
/// a refusing port is not enough on a busy test run: the freed port goes to the next
/// test that binds port 0.)
public final class RefusingPort {
    public let port: Int
    private let descriptor: Int32

    public init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RefusingPortError(call: "socket", errno: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else {
            close(descriptor)
            throw RefusingPortError(call: "bind", errno: errno)
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else {
            close(descriptor)
            throw RefusingPortError(call: "getsockname", errno: errno)
        }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Frees the port (also done when the value goes, which may be right after its last
    /// use: call this where the port must stop being held).
    public func release() {
        guard !released else { return }
        released = true
        close(descriptor)
    }

    private var released = false

    deinit { release() }
}

public struct RefusingPortError: Error, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public var description: String { "\(call) failed: \(String(cString: strerror(errno)))" }
}

import Foundation

/// ../shared/tools/netlab, the namespaces-and-NATs lab the network tests run in.
public enum Netlab {
    /// `VERTEX_NETLAB`, else `shared/tools/netlab` beside the package's directory.
    public static let tool: URL = {
        if let path = ProcessInfo.processInfo.environment["VERTEX_NETLAB"] { return URL(fileURLWithPath: path) }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/tools/netlab")
    }()
}

import Foundation
import NIOCore
import NIOPosix

/// A PostgreSQL server of its own for one test: Debian's binaries (installed by
/// .ci/run), a data directory in the temporary directory, a free loopback port, no
/// durability (fsync off: the tests need speed, not crash safety), stopped and removed
/// by ``stop()``. As root it runs as the `postgres` user, which initdb requires.
public final class PrivatePostgres: Sendable {
    public let port: Int
    public let directory: URL
    let binaries: URL

    /// `postgres://vertex@127.0.0.1:PORT/vertex?sslmode=disable`
    public var url: String { "postgres://vertex@127.0.0.1:\(port)/vertex?sslmode=disable" }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private init(port: Int, directory: URL, binaries: URL) {
        self.port = port
        self.directory = directory
        self.binaries = binaries
    }

    /// The newest PostgreSQL installed under /usr/lib/postgresql.
    static func findBinaries() throws -> URL {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).compactMap(Int.init).sorted()
        guard let newest = versions.last else {
            throw Failure(description: "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql; .ci/run does)")
        }
        return root.appendingPathComponent("\(newest)/bin")
    }

    public static func start() async throws -> PrivatePostgres {
        let binaries = try findBinaries()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let server = PrivatePostgres(port: try freePort(), directory: directory, binaries: binaries)
        if geteuid() == 0 {
            _ = try await ChildProcess.run(URL(fileURLWithPath: "/bin/chown"), ["-R", "postgres:postgres", directory.path])
        }
        try await server.run("initdb", ["-D", server.data.path, "-U", "vertex", "--auth=trust", "-E", "UTF8", "--no-sync"])
        try await server.startServer()
        try await server.run("createdb", ["-h", "127.0.0.1", "-p", "\(server.port)", "-U", "vertex", "vertex"])
        return server
    }

    var data: URL { directory.appendingPathComponent("data") }

    func startServer() async throws {
        try await run("pg_ctl", ["-D", data.path, "-l", directory.appendingPathComponent("server.log").path, "-w", "-t", "60",
                                 "-o", "-p \(port) -k \(directory.path) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                                 "start"])
    }

    /// Stops the server at once (as a crash would) and starts it again on the same port.
    public func restart(after pause: Duration = .zero) async throws {
        try await run("pg_ctl", ["-D", data.path, "-m", "immediate", "-w", "stop"])
        try await Task.sleep(for: pause)
        try await startServer()
    }

    public func stop() async {
        _ = try? await run("pg_ctl", ["-D", data.path, "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root).
    ///
    /// Through Python's subprocess, which closes every inherited descriptor but the
    /// standard three: the server pg_ctl starts outlives it, and would otherwise keep
    /// open the pipes of whatever else this test process had running (Foundation's
    /// pipes are inherited), so that their readers never saw an end.
    @discardableResult
    public func run(_ program: String, _ arguments: [String]) async throws -> String {
        let executable = binaries.appendingPathComponent(program).path
        let command = (geteuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + [executable] + arguments
        let closingDescriptors = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], close_fds=True))"
        let result = try await ChildProcess.run(ChildProcess.env, ["python3", "-c", closingDescriptors] + command, timeout: .seconds(120))
        guard result.status == 0 else {
            let log = (try? String(contentsOf: directory.appendingPathComponent("server.log"), encoding: .utf8)) ?? ""
            throw Failure(description: "\(program) failed (\(result.status)): \(result.stderr) \(result.stdout) \(log.suffix(2000))")
        }
        return result.stdout
    }

    /// A TCP port free on loopback now (bound and released).
    static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }
}

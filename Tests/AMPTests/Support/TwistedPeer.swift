import Foundation
import VertexTestSupport

/// Runs ../shared/tools/amp_peer.py, the real Twisted AMP peer.
/// Python and Twisted are required: a missing interpreter or package fails the test.
enum TwistedPeer {
    static var script: String { SharedFiles.root.appendingPathComponent("tools/amp_peer.py").path }

    struct Server {
        let process: Process
        let exited: Task<Int32, Never>
        let port: Int
        let certificateDirectory: URL

        func stop() async {
            // SIGKILL: Twisted's reactor may not be in a state to act on SIGTERM.
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            _ = await exited.value
            try? FileManager.default.removeItem(at: certificateDirectory)
        }
    }

    static func python(_ arguments: [String]) -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        return process
    }

    /// Starts the Twisted server on a free loopback port and waits for its port file.
    static func startServer() async throws -> Server {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("amp-peer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let portFile = directory.appendingPathComponent("port")
        let process = python([script, "--port", "0", "--port-file", portFile.path, "--cert-dir", directory.path])
        process.standardOutput = FileHandle.nullDevice
        let exited = try ChildProcess.launch(process)
        for _ in 0..<300 {
            if let text = try? String(contentsOf: portFile, encoding: .utf8), let port = Int(text) {
                return Server(process: process, exited: exited, port: port, certificateDirectory: directory)
            }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        _ = await exited.value
        throw Failure(description: "amp_peer.py did not start (is `pip install twisted pyopenssl service_identity` done?)")
    }

    struct ClientRun {
        var exitCode: Int32
        var output: String
    }

    /// Runs the Twisted client's checks against our server.
    static func runClient(port: Int) async throws -> ClientRun {
        let process = python([script, "--client", "127.0.0.1:\(port)", "--timeout", "120"])
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let exited = try ChildProcess.launch(process)
        let output = await onOwnThread { pipe.fileHandleForReading.readDataToEndOfFile() }
        return ClientRun(exitCode: await exited.value, output: String(decoding: output, as: UTF8.self))
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }
}

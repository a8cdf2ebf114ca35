import ArgumentParser
import Foundation
import Logging
import Q2Q
import VertexWebApp

struct AppCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "app",
        abstract: "A local web app: sign in, contacts, accept and send files in your browser.",
        discussion: """
            Runs a node that receives files for your identities (as vertex receive does) \
            and serves a page on 127.0.0.1 to drive it: sign in with an address and \
            password, keep contacts and see who is reachable, accept or refuse each \
            transfer from someone you have not trusted (once, always, or refuse; \
            unanswered prompts refuse after --prompt-timeout), send files with live \
            progress, and see what arrived. The URL it prints carries an access token; \
            the page works only with it, only under the names it was opened by, and \
            never takes requests from other sites.

              vertex app --open
              vertex app --as alice@example.com --port 8790 --to ~/Downloads
            """
    )

    @Option(name: .customLong("as"), help: ArgumentHelp("Receive only as this identity (repeatable; default: every identity in your home).",
                                                        valueName: "address"))
    var addresses: [Q2QAddress] = []

    @Option(help: "The page's port on 127.0.0.1 (0: any free port).")
    var port: Int = 8790

    @Option(help: ArgumentHelp("Serve the page on this address instead of 127.0.0.1 (others who can reach it still need the token).",
                               valueName: "host"))
    var listen: String?

    @Flag(help: "Open the page in your browser (xdg-open).")
    var open = false

    @Option(help: ArgumentHelp("Where received files go (default: ~/Downloads/vertex, created if missing).", valueName: "dir"),
            completion: .directory)
    var to: String?

    @Option(help: ArgumentHelp("Seconds a transfer from someone not trusted waits for your answer before it is refused.",
                               valueName: "seconds"))
    var promptTimeout: Int = 60

    @Flag(help: "Accept offered paths with hidden components (names starting with '.').")
    var allowHidden = false

    @OptionGroup var node: NodeOptions

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0–65535.") }
        guard (1...3_600).contains(promptTimeout) else { throw ValidationError("--prompt-timeout must be 1–3600 seconds.") }
        if let listen, !HostPort(host: listen, port: 1).hostIsIPAddress {
            throw ValidationError("--listen takes an IP address, e.g. 192.0.2.5.")
        }
        // The page answers only to the names it is served under (DNS rebinding): a
        // wildcard has no name a browser would use.
        if let listen, ["0.0.0.0", "::"].contains(listen) {
            throw ValidationError("--listen needs the address others will open, not a wildcard.")
        }
    }

    func run() async throws {
        let store = try node.home.openStore()
        let downloads = try downloadDirectory(to)
        var configuration = VertexAppConfiguration(downloads: downloads,
                                                   uploads: node.home.directory.appendingPathComponent("app-uploads"),
                                                   promptTimeout: .seconds(promptTimeout), allowHidden: allowHidden)
        if !addresses.isEmpty {
            let known = Set(try await store.identities().map(\.address))
            for address in addresses where !known.contains(address) {
                throw CLIError("no identity \(address) in \(node.home.directory.path) (vertex register \(address), or sign in on the page without --as)")
            }
            configuration.addresses = addresses
        }
        var logger = Logger(label: "vertex.app")
        logger.logLevel = node.verbose ? .info : .notice
        let app = VertexApp(store: store, node: try node.openNode(store: store), configuration: configuration, logger: logger)
        try await app.start()
        let token = AccessPolicy.newToken()
        let host = listen ?? "127.0.0.1"
        let extraHosts: Set<String> = listen.map { $0.contains(":") ? ["[\($0)]"] : [$0] } ?? []
        let open = open
        let serverLogger = logger
        let result = await runUntilInterrupted {
            try await AppWebServer.run(app, host: host, port: port, token: token, extraHosts: extraHosts, logger: serverLogger) { bound in
                let shown = host.contains(":") ? "[\(host)]" : host
                let url = "http://\(shown):\(bound)/?token=\(token)"
                print("vertex app: open \(url)")
                print("receiving files into \(downloads.path)")
                fflush(nil)
                if open { Self.openInBrowser(url) }
            }
        }
        await app.stop()
        if case .failure(let error)? = result {
            throw CLIError("the app's web server stopped: \(error)")
        }
    }

    /// Hands the URL to the desktop's opener; says so when there is none.
    static func openInBrowser(_ url: String) {
        let opener = Process()
        opener.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        opener.arguments = ["xdg-open", url]
        opener.standardOutput = FileHandle.nullDevice
        opener.standardError = FileHandle.nullDevice
        do {
            try opener.run()
        } catch {
            FileHandle.standardError.write(Data("vertex app: cannot open a browser (\(error)); open the URL above yourself\n".utf8))
        }
    }
}

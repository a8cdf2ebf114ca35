import AMP
import Foundation
import NIOCore
import Q2Q
import NIOSSL
import Testing

/// Interoperability with real Twisted AMP (../shared/tools/amp_peer.py), both ways.
@Suite("Twisted interop", .serialized)
struct TwistedInteropTests {
    static func utc(_ y: Int, _ mo: Int, _ d: Int, _ h: Int = 0, _ mi: Int = 0, _ s: Int = 0, _ us: Int = 0, offset: Int = 0) -> AMPDateTime {
        try! AMPDateTime(year: y, month: mo, day: d, hour: h, minute: mi, second: s, microsecond: us, utcOffsetMinutes: offset)
    }

    static let echoCases: [EchoArguments] = [
        EchoArguments(i: 42, s: [0, 1] + Array("bytes".utf8) + [0xFF], u: "héllo 世界", b: true, flt: 1.5,
                      d: AMPDecimal("3.14159")!, t: utc(2026, 11, 25, 4, 5, 6, 789_012),
                      ints: [1, -2, 300_000_000_000], texts: ["a", "ü", ""],
                      rows: [Row(id: 1, name: "one", note: Array("n".utf8)), Row(id: 2, name: "two", note: nil)],
                      opt: "present"),
        EchoArguments(i: AMPInteger("-12345678901234567890123")!, s: [], u: "", b: false, flt: -0.0,
                      d: AMPDecimal("-1E+10")!, t: utc(1999, 12, 31, 23, 59, 59, offset: 330),
                      ints: [], texts: [], rows: [], opt: nil),
        EchoArguments(i: 0, s: [UInt8](repeating: 0x7A, count: 65535), u: "x", b: true, flt: .nan,
                      d: AMPDecimal("NaN")!, t: utc(2000, 1, 1), ints: [0], texts: ["t"], rows: [], opt: nil),
        EchoArguments(i: 1, s: Array("y".utf8), u: "y", b: false, flt: -.infinity, d: AMPDecimal("Infinity")!,
                      t: utc(2000, 1, 1), ints: Array(repeating: 7, count: 1000), texts: Array(repeating: "w", count: 100),
                      rows: (0..<50).map { Row(id: $0, name: String($0), note: nil) }, opt: nil),
    ]

    /// The names of the fields that differ (the values can be 64 KiB long).
    static func differences(_ a: EchoArguments, _ b: EchoArguments) -> [String] {
        var names: [String] = []
        if a.i != b.i { names.append("i \(a.i) vs \(b.i)") }
        if a.s != b.s { names.append("s (\(a.s.count) vs \(b.s.count) bytes)") }
        if a.u != b.u { names.append("u") }
        if a.b != b.b { names.append("b") }
        if a.flt.bitPattern != b.flt.bitPattern { names.append("flt \(a.flt) vs \(b.flt)") }
        if a.d != b.d { names.append("d \(a.d) vs \(b.d)") }
        if a.t != b.t { names.append("t \(a.t) vs \(b.t)") }
        if a.ints != b.ints { names.append("ints") }
        if a.texts != b.texts { names.append("texts") }
        if a.rows != b.rows { names.append("rows") }
        if a.opt != b.opt { names.append("opt \(String(describing: a.opt)) vs \(String(describing: b.opt))") }
        return names
    }

    static func sameFloat(_ a: Double, _ b: Double) -> Bool {
        a.isNaN ? b.isNaN : a.bitPattern == b.bitPattern
    }

    @Test("our client against the Twisted server: every command")
    func ourClientTwistedServer() async throws {
        let server = try await TwistedPeer.startServer()
        do {
            try await exerciseTwistedServer(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    func exerciseTwistedServer(_ server: TwistedPeer.Server) async throws {

        var responders = AMPResponders()
        responders.register(Ping.self) { arguments, _ in Ping.Response(value: AMPInteger(integer(arguments.value) + 1)) }
        let connection = try await AMPConnection.connect(host: "127.0.0.1", port: server.port, responders: responders)

        for (n, sent) in Self.echoCases.enumerated() {
            var got = try await connection.call(Echo.self, sent)
            #expect(Self.sameFloat(got.flt, sent.flt), "Echo case \(n) flt")
            #expect(got.d.isNaN == sent.d.isNaN)
            got.flt = sent.flt
            if sent.d.isNaN { got.d = sent.d }
            #expect(Self.differences(got, sent).isEmpty, "Echo case \(n): \(Self.differences(got, sent))")
        }

        let tree = [
            TreeNode(name: "root", tags: ["a", "b"], weights: [0.5, .infinity], children: [
                Child(id: 1, when: Self.utc(2020, 2, 29, 12, 0, 0, 250_000, offset: -30), ok: true),
                Child(id: 2, when: nil, ok: false),
            ]),
            TreeNode(name: "leaf", tags: [], weights: [], children: []),
        ]
        #expect(try await connection.call(EchoNested.self, .init(tree: tree)).tree == tree)

        #expect(try await connection.call(Sum.self, .init(values: Array(0..<1000))).total == 499_500)
        let totals = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for k in 0..<200 {
                group.addTask { (k, try await connection.call(Sum.self, .init(values: [k, k])).total) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(totals.count == 200 && totals.allSatisfy { $0.value == 2 * $0.key })

        await #expect(throws: FailError.boom("declared failure")) {
            try await connection.call(Fail.self, .init(how: Array("declared".utf8)))
        }
        #expect(try await connection.call(Sum.self, .init(values: [2, 3])).total == 5)

        try await connection.send(Note.self, .init(text: "fire and forget ✓"))
        #expect(try await connection.call(LastNote.self, AMPEmpty()).text == "fire and forget ✓")

        // The Twisted server calls our Ping before it answers.
        #expect(try await connection.call(CallMeBack.self, .init(value: 41)).got == 42)

        do {
            _ = try await connection.call(NoSuchCommand.self, AMPEmpty())
            Issue.record("an unknown command succeeded")
        } catch let error as AMPRemoteError {
            #expect(error.isUnhandledCommand)
            #expect(error.errorDescription == "Unhandled Command: b'No-Such-Command'")
        }

        let me = connection.localAddress!
        #expect(try await connection.call(WhoAmI.self, AMPEmpty()).address == HostPort(host: me.ipAddress!, port: me.port!))
        #expect(try await connection.call(SourceIP.self, AMPEmpty()).ip == Array(me.ipAddress!.utf8))

        // StartTLS: verify the Twisted server's self-signed certificate as the only root.
        let peerPEM = try NIOSSLCertificate.fromPEMFile(server.certificateDirectory.appendingPathComponent("peer.pem").path)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(peerPEM)
        tls.certificateVerification = .noHostnameVerification
        _ = try await connection.startTLS(StartTLS.self, AMPEmpty(), configuration: tls)
        #expect(connection.isTLS)
        #expect(try await connection.peerCertificate() == peerPEM.first)
        #expect(try await connection.call(Sum.self, .init(values: [1, 2, 3])).total == 6)
        await #expect(throws: AMPConnectionError.tlsAlreadyStarted) {
            try await connection.startTLS(StartTLS.self, AMPEmpty(), configuration: tls)
        }
        await connection.close()

        // Fatal errors: answered, then the server closes.
        let fatal = try await AMPConnection.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: FailError.fatal("fatal failure")) {
            try await fatal.call(Fail.self, .init(how: Array("fatal".utf8)))
        }
        await fatal.waitUntilClosed()

        let undeclared = try await AMPConnection.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: AMPRemoteError(code: "UNKNOWN", description: "Unknown Error")) {
            try await undeclared.call(Fail.self, .init(how: Array("other".utf8)))
        }
        await undeclared.waitUntilClosed()
        await #expect(throws: AMPConnectionError.self) {
            try await undeclared.call(Sum.self, .init(values: [1]))
        }
    }

    @Test("the Twisted client's checks against our server")
    func twistedClientOurServer() async throws {
        let identity = try TestIdentity.authority("vertex test CA").issue("vertex-amp-test-server")
        let server = try await AMPServer.bind(host: "127.0.0.1", port: 0,
                                              responders: makeTestResponders(tls: identity.tls(server: true, trusting: [])))
        defer { Task { await server.close() } }
        let run = try await TwistedPeer.runClient(port: server.port!)
        print(run.output)
        let lines = run.output.split(separator: "\n")
        #expect(run.exitCode == 0, "\(run.output)")
        #expect(!lines.contains { $0.hasPrefix("FAIL") })
        let passed = lines.filter { $0.hasPrefix("PASS") }
        // Every check amp_peer.py has: four Echo cases, Sum, pipelining, nesting, errors,
        // Note, the call back, UNHANDLED, Who-Am-I, source-ip, StartTLS, fatal, undeclared.
        #expect(passed.count == 16, "\(run.output)")
        #expect(lines.last == "\(passed.count) passed, 0 failed")
    }
}

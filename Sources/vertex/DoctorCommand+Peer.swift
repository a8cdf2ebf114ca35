import Foundation
import NIOCore
import Q2Q

/// `vertex doctor --peer`: each method tried on its own, side by side, with a short
/// deadline, then the race `auto` runs.
struct PeerDiagnosis: Codable {
    struct Attempt: Codable {
        var method: String
        var connected: Bool
        /// From the connect call to a verified, claimed stream.
        var milliseconds: Double?
        /// The path that carried it, or why there was none.
        var detail: String
    }

    var peer: String
    var attempts: [Attempt]
    /// What `auto` picked.
    var auto: Attempt
    /// Whether the peer is listening at all (false: "not listening", quickly).
    var listening: Bool

    var reachable: Bool { auto.connected || attempts.contains(where: \.connected) }
    var directWorked: Bool { attempts.contains { $0.connected && $0.method != "relay" } }

    static let deadline: Duration = .seconds(4)

    static func run(node: Q2QNode, from: Q2QAddress, to: Q2QAddress, service: String, nat: NATBehaviour?) async -> PeerDiagnosis {
        let methods: [(String, Q2QMethodPolicy)] = [("tcp", .tcp), ("ptcp", Q2QMethodPolicy("ptcp")!), ("rptcp", Q2QMethodPolicy("rptcp")!),
                                                    ("relay", .relay)]
        let attempts = await withTaskGroup(of: (Int, Attempt).self) { group in
            for (index, (name, policy)) in methods.enumerated() {
                group.addTask {
                    (index, await attempt(name, policy, node: node, from: from, to: to, service: service, nat: nat))
                }
            }
            var attempts: [(Int, Attempt)] = []
            for await attempt in group { attempts.append(attempt) }
            return attempts.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let auto = await attempt("auto", .auto, node: node, from: from, to: to, service: service, nat: nat)
        let notListening = (attempts + [auto]).allSatisfy { !$0.connected && $0.detail.contains("not listening") }
        return PeerDiagnosis(peer: "\(to)/\(service)", attempts: attempts, auto: auto, listening: !notListening)
    }

    private static func attempt(_ name: String, _ policy: Q2QMethodPolicy, node: Q2QNode, from: Q2QAddress, to: Q2QAddress, service: String,
                                nat: NATBehaviour?) async -> Attempt {
        let started = ContinuousClock.now
        let outcome = await withTaskGroup(of: Result<Q2QStream, any Error>?.self) { group in
            group.addTask {
                do { return .success(try await node.connect(from: from, to: to, service: service, methods: policy)) } catch { return .failure(error) }
            }
            group.addTask {
                try? await Task.sleep(for: deadline)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            // A stream that arrived just after the deadline is closed, not leaked.
            // (Not awaited: a graceful close waits for the peer; the node's shutdown ends it.)
            for await late in group { if case .success(let stream)?? = late { stream.channel.channel.close(promise: nil) } }
            return first
        }
        let elapsed = ContinuousClock.now - started
        switch outcome {
        case .success(let stream)?:
            stream.channel.channel.close(promise: nil)
            return Attempt(method: name, connected: true, milliseconds: Doctor.milliseconds(elapsed), detail: "\(stream.method)")
        case .failure(let error)?:
            return Attempt(method: name, connected: false, milliseconds: nil, detail: reason(for: error, method: name, nat: nat))
        case nil:
            return Attempt(method: name, connected: false, milliseconds: nil,
                           detail: "timed out after \(deadline)" + (hint(for: name, nat: nat).map { ": \($0)" } ?? ""))
        }
    }

    /// The failure in words, with what our NAT explains of it.
    static func reason(for error: any Error, method: String, nat: NATBehaviour?) -> String {
        let text = Doctor.words(error)
        if text.contains("is not listening") {
            return "not listening: the peer is offline or does not serve this (\(text))"
        }
        let offered = text.range(of: "(offered: ").map { String(text[$0.lowerBound...]) } ?? ""
        if method == "tcp", text.contains("tcp@") {
            return "the peer's tcp@ paths do not answer from here (it is behind a NAT or firewall, or they are on its LAN) \(offered)"
        }
        if text.contains("offers no method") {
            return "not offered by the peer" + (method == "ptcp" || method == "rptcp" ? " (its UDP is blocked, or turned off)" : "") + " — \(text)"
        }
        return text + (hint(for: method, nat: nat).map { "; \($0)" } ?? "")
    }

    static func hint(for method: String, nat: NATBehaviour?) -> String? {
        guard method == "ptcp" || method == "rptcp" else { return nil }
        return natExplanation(nat)
    }

    /// What our NAT explains of a direct path that did not work.
    static func natExplanation(_ nat: NATBehaviour?) -> String {
        guard let nat, nat.udpWorks else { return "UDP to the presence server gets no answer here (blocked?): only tcp and the relay can work" }
        switch nat.mapping {
        case .addressAndPortDependent?, .addressDependent?:
            return "your NAT is symmetric (\(nat.mapping!.rawValue)): hole punching works only with a public peer or one whose router maps ports, not with a peer behind a cone or symmetric NAT"
        default:
            return "the peer's NAT is probably symmetric, or its UDP blocked (yours maps \(nat.mapping?.rawValue ?? "endpoint-independently"))"
        }
    }

    /// `vertex connect -v` and `vertex send -v`: when the stream is relayed, a line
    /// saying why (the same tests as `vertex doctor`, without the lifetime probe),
    /// once they are done; nil when it is not relayed.
    static func explainRelay(_ stream: Q2QStream, policy: Q2QMethodPolicy, store: any NodeStore, say: @escaping @Sendable (String) -> Void) -> Task<Void, Never>? {
        guard case .virtual = stream.method else { return nil }
        if policy == .relay {
            say("relayed: --method allows only the relay")
            return nil
        }
        return Task {
            let client = PresenceClient(store: store)
            var nat: NATBehaviour?
            if let server = try? await client.server(for: stream.local.domain),
               let address = server.socketAddresses(family: .v4).first {
                var prober = NATProber(server: address)
                prober.lifetimeProbe = .zero
                nat = try? await prober.run()
            }
            say("relayed: \(natExplanation(nat)); vertex doctor --peer \(stream.peer)/\(stream.service) tells more")
        }
    }

    var lines: [String] {
        var lines = ["\(peer):"]
        for attempt in attempts + [auto] {
            let result = attempt.connected
                ? String(format: "connected in %.0f ms by %@", attempt.milliseconds ?? 0, attempt.detail)
                : "failed: \(attempt.detail)"
            lines.append("  \(attempt.method.padding(toLength: 6, withPad: " ", startingAt: 0)) \(result)")
        }
        return lines
    }
}

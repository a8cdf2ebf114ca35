import Foundation
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
            for await late in group { if case .success(let stream)?? = late { try? await stream.channel.channel.close() } }
            return first
        }
        let elapsed = ContinuousClock.now - started
        switch outcome {
        case .success(let stream)?:
            try? await stream.channel.channel.close()
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
        if text.contains("is not listening") || text.contains("no listener") {
            return "not listening: the peer is offline or does not serve this (\(text))"
        }
        if text.contains("offers no method") {
            return "not offered by the peer" + (method == "ptcp" || method == "rptcp" ? " (its UDP is blocked, or turned off)" : "") + " — \(text)"
        }
        return text + (hint(for: method, nat: nat).map { "; \($0)" } ?? "")
    }

    static func hint(for method: String, nat: NATBehaviour?) -> String? {
        guard method == "ptcp" || method == "rptcp" else { return nil }
        guard let nat, nat.udpWorks else { return "UDP is blocked here" }
        switch nat.mapping {
        case .addressAndPortDependent?, .addressDependent?:
            return "your NAT is symmetric (\(nat.mapping!.rawValue)): hole punching works only with a public peer or one whose router maps ports, not with a peer behind a cone or symmetric NAT"
        default:
            return "the peer's NAT is probably symmetric (yours maps endpoint-independently)"
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

import Foundation
import Q2Q
import VertexApps

/// The user's answer to "accept files from X?".
public enum PromptAnswer: String, Sendable, Codable {
    /// Take this transfer.
    case once
    /// Take this one and every later one from the same sender (`vertex authorize`).
    case always
    case refuse
    /// Nobody answered in time (refused).
    case timedOut
}

/// An incoming transfer waiting for the user.
struct PendingPrompt {
    var prompt: AppSnapshot.Prompt
    var deadline: ContinuousClock.Instant
    var continuation: CheckedContinuation<PromptAnswer, Never>
}

extension VertexApp {
    /// Listens for files as `address`, unless it does already.
    func startReceiving(as address: Q2QAddress) async {
        // One attempt at a time per address (signing in and the refresher may both try).
        guard state.withLock({ state in
            guard state.listeners[address] == nil, !state.stopped, !state.starting.contains(address) else { return false }
            state.starting.insert(address)
            return true
        }) else { return }
        defer { state.withLock { _ = $0.starting.remove(address) } }
        do {
            let listener = try await node.listen(as: address, service: FileTransferMessage.service, description: "vertex app")
            let accepted = state.withLock { state -> Bool in
                guard !state.stopped else { return false }
                state.listeners[address] = listener
                state.listenProblems[address] = nil
                return true
            }
            guard accepted else {
                await listener.close()
                return
            }
            let serving = Task { [self] in await serve(listener) }
            state.withLock { $0.tasks.append(serving) }
        } catch {
            // Tried again at each refresh. The identity shows the latest problem; the
            // list of errors says it once until listening works (a retry may word the
            // same outage differently: the link is then opened by another path).
            let problem = "cannot receive as \(address): \(error)"
            let isNew = state.withLock { state in
                defer { state.listenProblems[address] = problem }
                return state.listenProblems[address] == nil
            }
            if isNew { note(problem) }
        }
        changes.changed()
    }

    private func serve(_ listener: Q2QListener) async {
        await withDiscardingTaskGroup { group in
            for await stream in listener.connections {
                noteConnection(stream, incoming: true)
                let limit = configuration.concurrentReceives
                guard state.withLock({ state -> Bool in
                    guard state.receiving < limit else { return false }
                    state.receiving += 1
                    return true
                }) else {
                    note("\(stream.peer) turned away: \(limit) transfers are running")
                    try? await stream.channel.channel.close()
                    continue
                }
                group.addTask { [self] in
                    await receive(stream)
                    state.withLock { $0.receiving -= 1 }
                }
            }
        }
    }

    /// One incoming transfer: asked about unless the sender is trusted, shown with its
    /// progress, its files put in the inbox once verified.
    private func receive(_ stream: Q2QStream) async {
        let id = Self.newID()
        addTransfer(TransferRecord(id: id, direction: .receive, local: stream.local, peer: stream.peer, state: .waiting,
                                   method: stream.method.description))
        let decide: FileReceiver.Decision = { [self] offer, peer in
            updateTransfer(id) { record in
                record.files = offer.files.map(\.name)
                record.totalBytes = offer.totalBytes
            }
            let trusted = (try? await store.authorizedSenders(for: stream.local).contains(peer)) ?? false
            if trusted { return nil }
            switch await ask(offer, from: peer, to: stream.local) {
            case .once: return nil
            case .always:
                do {
                    try await store.authorize(peer, for: stream.local, now: Date())
                } catch {
                    note("could not remember to trust \(peer): \(error)")
                }
                return nil
            case .refuse: return refused(id, because: "\(stream.local) declined")
            case .timedOut: return refused(id, because: "\(stream.local) did not answer in time")
            }
        }
        do {
            let options = FileReceiver.Options(allowHidden: configuration.allowHidden)
            let summary = try await FileReceiver.receive(stream, into: configuration.downloads, options: options, decide: decide) {
                [self] bytes, total in
                progress(id, bytes: bytes, of: total)
            }
            for file in summary.files {
                let size = ((try? FileManager.default.attributesOfItem(atPath: file.path))?[.size] as? NSNumber)?.int64Value ?? 0
                _ = try? await store.recordReceived(ReceivedFile(receiver: stream.local, sender: summary.peer, path: file.path,
                                                                 size: size, verified: true, received: Date()))
            }
            finishTransfer(id, verified: summary.verified, error: summary.verified ? nil : "a file did not match its SHA-256")
        } catch {
            finishTransfer(id, verified: false, error: "\(error)")
        }
    }

    /// Marks transfer `id` refused by the user; the reason given to the sender.
    private func refused(_ id: String, because reason: String) -> String {
        updateTransfer(id) { record in
            record.state = .refused
            record.error = reason
        }
        return reason
    }

    /// Asks the page about `offer`, and waits for an answer or the deadline.
    private func ask(_ offer: FileTransferMessage.Offer, from peer: Q2QAddress, to local: Q2QAddress) async -> PromptAnswer {
        let id = Self.newID()
        let timeout = configuration.promptTimeout
        let prompt = AppSnapshot.Prompt(id: id, from: peer.description, to: local.description,
                                        files: offer.files.map { .init(name: $0.name, size: $0.size) },
                                        totalBytes: offer.totalBytes, secondsLeft: 0)
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            resolve(prompt: id, with: .timedOut)
        }
        defer { timer.cancel() }
        let answer = await withCheckedContinuation { continuation in
            let stopped = state.withLock { state -> Bool in
                guard !state.stopped else { return true }
                state.prompts[id] = PendingPrompt(prompt: prompt, deadline: .now + timeout, continuation: continuation)
                return false
            }
            if stopped { continuation.resume(returning: .refuse) }
            changes.changed()
        }
        logger.info("prompt answered", metadata: ["from": "\(peer)", "answer": "\(answer.rawValue)"])
        return answer
    }

    /// Answers a prompt the page shows; `false` when there is no such prompt (answered
    /// already, or timed out).
    @discardableResult
    public func resolve(prompt id: String, with answer: PromptAnswer) -> Bool {
        guard let pending = state.withLock({ $0.prompts.removeValue(forKey: id) }) else { return false }
        pending.continuation.resume(returning: answer)
        changes.changed()
        return true
    }
}

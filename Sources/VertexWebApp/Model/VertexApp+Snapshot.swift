import Foundation
import Q2Q

extension VertexApp {
    /// Everything the page shows, now.
    public func snapshot() async throws -> AppSnapshot {
        let identities = try await ourIdentities()
        let pins = try await store.pins()
        let contacts = try await store.contacts()
        let inbox = try await store.receivedFiles(limit: 100)
        var trusted = Set<Q2QAddress>()
        for identity in identities {
            trusted.formUnion(try await store.authorizedSenders(for: identity.address))
        }
        let now = ContinuousClock.now
        return state.withLock { state in
            AppSnapshot(
                identities: identities.map { identity in
                    AppSnapshot.Identity(address: identity.address.description, serial: identity.certificate.serial,
                                         expires: identity.certificate.notValidAfter,
                                         listening: state.listeners[identity.address] != nil,
                                         registered: state.registered[identity.address],
                                         problem: state.listenProblems[identity.address])
                },
                pins: pins.map { AppSnapshot.Pin(domain: $0.domain, fingerprint: $0.certificate.fingerprint) },
                contacts: contacts.map { contact in
                    AppSnapshot.Contact(address: contact.address.description, name: contact.name,
                                        reachable: state.reachable[contact.address], trusted: trusted.contains(contact.address))
                },
                prompts: state.prompts.values.sorted { $0.deadline < $1.deadline }.map { pending in
                    var prompt = pending.prompt
                    prompt.secondsLeft = max(0, Int(((pending.deadline - now) / .milliseconds(1)) / 1000))
                    return prompt
                },
                transfers: state.transfers.reversed().map(\.snapshot),
                inbox: inbox.map { file in
                    AppSnapshot.Received(id: file.id, receiver: file.receiver.description, sender: file.sender.description,
                                         path: file.path, size: file.size, verified: file.verified, received: file.received)
                },
                connections: state.connections.reversed(),
                services: state.listeners.values.map { "\($0.address) \($0.service)" }.sorted(),
                downloads: configuration.downloads.path,
                errors: state.errors.reversed()
            )
        }
    }
}

import Foundation
import Q2Q
import VertexApps

/// Identities (signing in), contacts and what the page knows of who is reachable.
extension VertexApp {
    /// Registers `address` with its password, as `vertex register` does (creating the
    /// account first on a server with open registration when asked), and starts
    /// receiving for it. `server` is recorded for the domain when none is.
    public func signIn(address text: String, password: String, server serverText: String?, createAccount: Bool) async throws -> String {
        guard let address = try? Q2QAddress(text.trimmingCharacters(in: .whitespaces)), !address.resource.isEmpty else {
            throw VertexAppError(.badRequest, "'\(text.prefix(100))' is not an address (user@domain)")
        }
        if let chosen = configuration.addresses, !chosen.contains(address) {
            throw VertexAppError(.badRequest, "this app serves only \(chosen.map(\.description).joined(separator: ", ")) (--as)")
        }
        guard !password.isEmpty else { throw VertexAppError(.badRequest, "give the password of \(address)") }
        let server = try Self.server(serverText)
        let client = PresenceClient(store: store)
        do {
            if createAccount {
                try await client.createAccount(address, password: Array(password.utf8), server: server)
            }
            let identity = try await client.register(address, password: Array(password.utf8), server: server)
            if let server, try await store.server(for: address.domain) == nil {
                try await store.setServer(server, for: address.domain)
            }
            logger.info("signed in", metadata: ["address": "\(address)", "serial": "\(identity.certificate.serial)"])
        } catch let error as PresenceClientError {
            throw VertexAppError(.failed, "\(await client.explained(error, for: address.domain, explicit: server))")
        } catch let error as Q2QPinError {
            throw VertexAppError(.failed, error.description)
        }
        // A new certificate for an identity already listening is used from its next
        // registration; a new identity starts receiving now.
        await startReceiving(as: address)
        Task { [self] in await refreshReachability() }
        changes.changed()
        return address.description
    }

    /// Adds a contact, or renames the one of that address. `server` says where the
    /// contact's domain's presence server is, when it is not at the domain's own name.
    public func saveContact(address text: String, name: String?, server serverText: String?) async throws {
        guard let address = try? Q2QAddress(text.trimmingCharacters(in: .whitespaces)), !address.resource.isEmpty else {
            throw VertexAppError(.badRequest, "'\(text.prefix(100))' is not an address (user@domain)")
        }
        let trimmed = (name ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let name = trimmed.isEmpty ? address.resource : trimmed
        guard name.count <= Contact.maximumNameLength,
              !name.unicodeScalars.contains(where: { [.control, .format].contains($0.properties.generalCategory) }) else {
            throw VertexAppError(.badRequest, "a name of at most \(Contact.maximumNameLength) printable characters, please")
        }
        if let server = try Self.server(serverText) {
            try await store.setServer(server, for: address.domain)
        }
        let existing = try await store.contacts().first { $0.address == address }
        try await store.saveContact(Contact(address: address, name: name, added: existing?.added ?? Date()))
        changes.changed()
        Task { [self] in await refreshReachability(of: [address]) }
    }

    public func removeContact(address text: String) async throws {
        guard let address = try? Q2QAddress(text), try await store.removeContact(address) else {
            throw VertexAppError(.notFound, "no contact \(text.prefix(100))")
        }
        state.withLock { _ = $0.reachable.removeValue(forKey: address) }
        changes.changed()
    }

    /// Asks the presence servers whether each contact listens for files, and whether
    /// each of our identities is registered (our side of "reachable"). A full refresh
    /// also tries again to receive as identities whose listening failed (their server
    /// was down, say).
    func refreshReachability(of only: [Q2QAddress]? = nil) async {
        guard let identities = try? await ourIdentities(), let asker = identities.first?.address else { return }
        if only == nil {
            for identity in identities where state.withLock({ $0.listeners[identity.address] == nil }) {
                await startReceiving(as: identity.address)
            }
        }
        let contacts: [Q2QAddress]
        if let only {
            contacts = only
        } else {
            contacts = ((try? await store.contacts()) ?? []).map(\.address)
        }
        let ours = only == nil ? identities.map(\.address) : []
        let node = node
        let service = FileTransferMessage.service
        await withTaskGroup(of: (Q2QAddress, Bool?, Bool).self) { group in
            for contact in contacts {
                group.addTask {
                    let answer = try? await withTimeout(.seconds(5), "reachability") {
                        try await node.isListening(as: asker, to: contact, service: service)
                    }
                    return (contact, answer, false)
                }
            }
            for address in ours {
                group.addTask {
                    let answer = try? await withTimeout(.seconds(5), "registration") {
                        try await node.isListening(as: address, to: address, service: service)
                    }
                    return (address, answer, true)
                }
            }
            for await (address, answer, isOurs) in group {
                state.withLock { state in
                    if isOurs {
                        state.registered[address] = answer ?? false
                    } else {
                        state.reachable[address] = answer ?? false
                    }
                }
            }
        }
        changes.changed()
    }

    static func server(_ text: String?) throws -> HostPort? {
        guard let text = text?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        guard let server = HostPort(text) else { throw VertexAppError(.badRequest, "'\(text.prefix(100))' is not HOST:PORT") }
        return server
    }
}

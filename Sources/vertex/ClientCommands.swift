import ArgumentParser
import Foundation
import Q2Q

struct RegisterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register",
        abstract: "Get a certificate for your address from its domain's presence server.",
        discussion: """
            Makes a new key, sends a certificate request with your password over TLS, and \
            stores the key and certificate in your home. The first contact with a domain \
            pins its CA (or checks it against --domain-fingerprint); later contacts must \
            present the same CA. The server is --server, else the one set with \
            'vertex servers set', else the domain's own name on port 8788.

              vertex register alice@example.com --server 127.0.0.1:8788
            """
    )

    @Argument(help: "Your address, user@domain.")
    var address: String

    @Option(help: ArgumentHelp("The presence server, HOST:PORT.", valueName: "host:port"))
    var server: HostPort?

    @Option(help: ArgumentHelp("The domain CA's SHA-256 fingerprint, as its operator gave it (instead of trusting on first use).",
                               valueName: "fingerprint"))
    var domainFingerprint: String?

    @Flag(help: "Create the account first (servers with open registration only).")
    var createAccount = false

    @OptionGroup var home: HomeOptions
    @OptionGroup var password: PasswordOptions

    func run() async throws {
        let address = try parseAddress(address)
        guard !address.resource.isEmpty else { throw ValidationError("give a user address, user@\(address.domain)") }
        let secret = try password.read(prompt: "Password for \(address): ", confirm: createAccount)
        let client = PresenceClient(store: try home.openStore())
        do {
            if createAccount {
                try await client.createAccount(address, password: secret, server: server, fingerprint: domainFingerprint)
                print("created the account \(address)")
            }
            let identity = try await client.register(address, password: secret, server: server, fingerprint: domainFingerprint)
            print("registered \(identity.address): certificate \(identity.certificate.serial), valid until \(utc(identity.certificate.notValidAfter))")
            // The server that worked is the one to use from now on, unless one is recorded.
            if let server, try await client.store.server(for: address.domain) == nil {
                try await client.store.setServer(server, for: address.domain)
                print("recorded \(server) as the presence server of \(address.domain) (vertex servers set changes it)")
            }
        } catch let error as PresenceClientError {
            throw CLIError("\(await client.explained(error, for: address.domain, explicit: server))")
        } catch let error as Q2QPinError {
            throw CLIError(error.description)
        }
    }
}

struct IdentityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "identity",
        abstract: "Your identities (addresses with a certificate).",
        subcommands: [Show.self]
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show address, fingerprint and expiry of your identities.")

        @Argument(help: "Only this address.")
        var address: String?

        @OptionGroup var home: HomeOptions

        func run() async throws {
            let store = try home.openStore()
            let identities: [Q2QIdentity]
            if let address {
                let address = try parseAddress(address)
                guard let identity = try await store.identity(for: address) else {
                    throw CLIError("no identity for \(address) in \(home.directory.path); get one with 'vertex register \(address)'")
                }
                identities = [identity]
            } else {
                identities = try await store.identities()
            }
            if identities.isEmpty { print("no identities in \(home.directory.path); get one with 'vertex register user@domain'") }
            for identity in identities {
                let certificate = identity.certificate
                let state = certificate.notValidAfter < Date() ? "EXPIRED" : "valid"
                print("\(identity.address)")
                print("  certificate  \(certificate.serial)")
                print("  fingerprint  \(certificate.fingerprint)")
                print("  \(state) until  \(utc(certificate.notValidAfter))")
            }
        }
    }
}

struct ServersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "servers",
        abstract: "Where each domain's presence server is (when not at DOMAIN:8788).",
        subcommands: [Set.self, List.self, Remove.self]
    )

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Use HOST:PORT as DOMAIN's presence server.")
        @Argument(help: "The domain.") var domain: String
        @Argument(help: "The server, HOST:PORT.") var server: HostPort
        @OptionGroup var home: HomeOptions

        func run() async throws {
            let domain = try parseAddress(domain)
            guard domain.isDomain else { throw ValidationError("give a domain, not a user address") }
            try await home.openStore().setServer(server, for: domain.domain)
            print("\(domain.domain) → \(server)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the mappings.")
        @OptionGroup var home: HomeOptions

        func run() async throws {
            let servers = try await home.openStore().servers()
            for (domain, server) in servers { print("\(domain)\t\(server)") }
            if servers.isEmpty { print("no mappings: every domain's server is DOMAIN:8788") }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget a mapping.")
        @Argument(help: "The domain.") var domain: String
        @OptionGroup var home: HomeOptions

        func run() async throws {
            try await home.openStore().setServer(nil, for: domain.lowercased())
            print("forgot \(domain.lowercased())")
        }
    }
}

struct PinsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pins",
        abstract: "The domain CAs your home trusts (pinned on first contact).",
        subcommands: [List.self, Remove.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pinned domains and fingerprints.")
        @OptionGroup var home: HomeOptions

        func run() async throws {
            let pins = try await home.openStore().pins()
            for (domain, certificate) in pins { print("\(domain)\t\(certificate.fingerprint)") }
            if pins.isEmpty { print("no pinned domains") }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget a domain's pinned CA, so that the next contact pins it again.",
            discussion: "Only when you know the domain really changed its CA.")
        @Argument(help: "The domain.") var domain: String
        @OptionGroup var home: HomeOptions

        func run() async throws {
            guard try await home.openStore().removePin(for: domain.lowercased()) else { throw CLIError("\(domain) is not pinned") }
            print("forgot the CA of \(domain.lowercased())")
        }
    }
}

struct WhoAmICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whoami",
        abstract: "Ask a presence server which address and port it sees you at (Who-Am-I).")

    @Option(help: ArgumentHelp("The presence server, HOST:PORT.", valueName: "host:port"))
    var server: HostPort

    func run() async throws {
        do {
            print(try await PresenceClient.whoAmI(server: server))
        } catch let error as PresenceClientError {
            throw CLIError(error.description)
        }
    }
}

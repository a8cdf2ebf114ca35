import ArgumentParser
import Foundation
import Q2Q

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage a presence server's accounts (run where its --data is).",
        subcommands: [Add.self, List.self, Remove.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account.")

        @Argument(help: "The new user's address, user@domain.")
        var address: String

        @OptionGroup var data: DataOptions
        @OptionGroup var password: PasswordOptions

        func run() async throws {
            let address = try parseAddress(address)
            guard !address.resource.isEmpty else { throw ValidationError("give a user address, user@\(address.domain)") }
            if let problem = DomainAuthority.problem(naming: address) { throw ValidationError(problem) }
            let store = try await data.openStore()
            let secret = try password.read(prompt: "Password for \(address): ", confirm: true)
            let hash = try PasswordHash(hashing: secret)
            guard try await store.addUser(address, password: hash, now: Date()) else {
                throw CLIError("\(address) exists already")
            }
            print("added \(address)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List accounts.")

        @Option(help: "Only this domain's users.")
        var domain: String?

        @OptionGroup var data: DataOptions

        func run() async throws {
            let users = try await data.openStore().users(domain: domain?.lowercased())
            for user in users { print("\(user.address)\tcreated \(utc(user.created))") }
            if users.isEmpty { print("no users") }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove an account and revoke its certificates.")

        @Argument(help: "The user's address.")
        var address: String

        @OptionGroup var data: DataOptions

        func run() async throws {
            let address = try parseAddress(address)
            guard try await data.openStore().removeUser(address) else { throw CLIError("no user \(address)") }
            print("removed \(address); its certificates are revoked")
        }
    }
}

struct CertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert",
        abstract: "The certificates a presence server issued (run where its --data is).",
        subcommands: [List.self, Revoke.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List issued certificates, newest first.")

        @Argument(help: "Only this user's certificates.")
        var address: String?

        @OptionGroup var data: DataOptions

        func run() async throws {
            let address = try address.map(parseAddress)
            let records = try await data.openStore().issuedCertificates(for: address)
            for record in records {
                let state = record.revoked ? "revoked" : (record.notValidAfter < Date() ? "expired" : "valid")
                print("\(record.serial)\t\(record.address)\tissued \(utc(record.issued))\tuntil \(utc(record.notValidAfter))\t\(state)")
            }
            if records.isEmpty { print("no certificates") }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a certificate: 'secure' refuses it from then on.",
            discussion: "SERIAL is the hex serial 'vertex cert list' shows.")

        @Argument(help: "The certificate's serial number, in hex.")
        var serial: String

        @OptionGroup var data: DataOptions

        func run() async throws {
            let serial = serial.lowercased().filter { $0 != ":" }
            guard !serial.isEmpty, serial.allSatisfy(\.isHexDigit) else { throw ValidationError("the serial must be hex, as 'vertex cert list' shows it") }
            guard try await data.openStore().revoke(serial: serial) else { throw CLIError("no certificate with serial \(serial)") }
            print("revoked \(serial)")
        }
    }
}

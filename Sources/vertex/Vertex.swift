import AMP
import ArgumentParser
import Foundation
import NIOCore
import Q2Q

@main
struct Vertex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vertex",
        abstract: "Vertex: secure connections between people addressed like email (alice@example.com).",
        discussion: """
            A domain runs a presence server (vertex server) that issues its users \
            certificates. Users get theirs with vertex register, and are then known to \
            peers by their address. See README.md for a walk-through.
            """,
        version: "0.1.0",
        subcommands: [
            DemoCommand.self, ServerCommand.self, UserCommand.self, CertCommand.self,
            RegisterCommand.self, IdentityCommand.self, ServersCommand.self, PinsCommand.self, WhoAmICommand.self,
            SendCommand.self, ReceiveCommand.self, AuthorizeCommand.self,
            ServeCommand.self, ConnectCommand.self, TunnelCommand.self, DoctorCommand.self,
            AppCommand.self, SigmaCommand.self, AMPCommandGroup.self,
        ]
    )

    static func main() async {
        MemoryTuning.apply()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

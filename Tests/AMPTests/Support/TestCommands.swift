import AMP
import Foundation
import Locking
import NIOCore
import Q2Q
import NIOSSL

// The commands of ../shared/tools/amp_peer.py and of the golden vectors, declared the
// way an application declares its own.

struct Row: Codable, Sendable, Equatable {
    var id: Int
    var name: String
    var note: [UInt8]?
}

struct EchoArguments: Codable, Sendable, Equatable {
    var i: AMPInteger
    var s: [UInt8]
    var u: String
    var b: Bool
    var flt: Double
    var d: AMPDecimal
    var t: AMPDateTime
    var ints: [AMPInteger]
    var texts: [String]
    var rows: [Row]
    var opt: String?
}

enum Echo: AMPCommand {
    static let name = "Echo"
    typealias Arguments = EchoArguments
    typealias Response = EchoArguments
}

struct Child: Codable, Sendable, Equatable {
    var id: Int
    var when: AMPDateTime?
    var ok: Bool
}

struct TreeNode: Codable, Sendable, Equatable {
    var name: String
    var tags: [String]
    var weights: [Double]
    var children: [Child]
}

struct TreeArguments: Codable, Sendable, Equatable {
    var tree: [TreeNode]
}

enum EchoNested: AMPCommand {
    static let name = "EchoNested"
    typealias Arguments = TreeArguments
    typealias Response = TreeArguments
}

enum Sum: AMPCommand {
    static let name = "Sum"
    struct Arguments: Codable, Sendable { var values: [Int] }
    struct Response: Codable, Sendable { var total: Int }
}

enum FailError: AMPDeclaredError, Equatable {
    case boom(String)
    case fatal(String)

    var code: String {
        switch self {
        case .boom: return "BOOM"
        case .fatal: return "FATAL"
        }
    }

    var errorDescription: String {
        switch self {
        case .boom(let text), .fatal(let text): return text
        }
    }

    var isFatal: Bool { self == .fatal(errorDescription) }

    init?(code: String, description: String) {
        switch code {
        case "BOOM": self = .boom(description)
        case "FATAL": self = .fatal(description)
        default: return nil
        }
    }
}

enum Fail: AMPCommand {
    static let name = "Fail"
    struct Arguments: Codable, Sendable { var how: [UInt8] }
    typealias Failure = FailError
}

enum Note: AMPCommand {
    static let name = "Note"
    static let requiresAnswer = false
    struct Arguments: Codable, Sendable { var text: String }
}

enum LastNote: AMPCommand {
    static let name = "LastNote"
    typealias Arguments = AMPEmpty
    struct Response: Codable, Sendable { var text: String }
}

enum Ping: AMPCommand {
    static let name = "Ping"
    struct Arguments: Codable, Sendable { var value: AMPInteger }
    struct Response: Codable, Sendable { var value: AMPInteger }
}

enum CallMeBack: AMPCommand {
    static let name = "CallMeBack"
    struct Arguments: Codable, Sendable { var value: AMPInteger }
    struct Response: Codable, Sendable { var got: AMPInteger }
}

enum WhoAmI: AMPCommand {
    static let name = "Who-Am-I"
    typealias Arguments = AMPEmpty
    struct Response: Codable, Sendable { var address: HostPort }
}

enum SourceIP: AMPCommand {
    static let name = "source-ip"
    typealias Arguments = AMPEmpty
    struct Response: Codable, Sendable { var ip: [UInt8] }
}

enum NoSuchCommand: AMPCommand {
    static let name = "No-Such-Command"
    typealias Arguments = AMPEmpty
}

// Commands only the vectors use.

enum Empty: AMPCommand {
    static let name = "Empty"
    typealias Arguments = AMPEmpty
}

enum OptionalCommand: AMPCommand {
    static let name = "Optional"
    struct Arguments: Codable, Sendable { var required: Int; var maybe: String? }
    struct Response: Codable, Sendable { var echo: String? }
}

struct ScalarsArguments: Codable, Sendable {
    var i: AMPInteger
    var s: [UInt8]
    var u: String
    var b: Bool
    var flt: Double
    var d: AMPDecimal
    var t: AMPDateTime
}

enum Scalars: AMPCommand {
    static let name = "Scalars"
    typealias Arguments = ScalarsArguments
    typealias Response = ScalarsArguments
}

struct UndeclaredFailure: Error {}

func integer(_ value: AMPInteger) -> Int { Int(exactly: value)! }

/// A server answering every command of amp_peer.py and of the vectors, as the Twisted
/// peer does. Notes are remembered per server.
func makeTestResponders(tls: TLSConfiguration? = nil) -> AMPResponders {
    let lastNote = Locked("")
    var responders = AMPResponders()
    responders.register(Echo.self) { arguments, _ in arguments }
    responders.register(EchoNested.self) { arguments, _ in arguments }
    responders.register(Scalars.self) { arguments, _ in arguments }
    responders.register(Sum.self) { arguments, _ in Sum.Response(total: arguments.values.reduce(0, +)) }
    responders.register(Fail.self) { arguments, _ in
        switch String(decoding: arguments.how, as: UTF8.self) {
        case "declared": throw FailError.boom("declared failure")
        case "fatal": throw FailError.fatal("fatal failure")
        default: throw UndeclaredFailure()
        }
    }
    responders.register(Note.self) { arguments, _ in
        lastNote.withLock { $0 = arguments.text }
        return AMPEmpty()
    }
    responders.register(LastNote.self) { _, _ in LastNote.Response(text: lastNote.withLock { $0 }) }
    responders.register(Ping.self) { arguments, _ in
        Ping.Response(value: AMPInteger(integer(arguments.value) + 1))
    }
    responders.register(CallMeBack.self) { arguments, context in
        let reply = try await context.connection.call(Ping.self, .init(value: arguments.value))
        return CallMeBack.Response(got: reply.value)
    }
    responders.register(WhoAmI.self) { _, context in
        let peer = context.remoteAddress!
        return WhoAmI.Response(address: HostPort(host: peer.ipAddress!, port: peer.port!))
    }
    responders.register(SourceIP.self) { _, context in
        SourceIP.Response(ip: Array(context.remoteAddress!.ipAddress!.utf8))
    }
    responders.register(Empty.self) { _, _ in AMPEmpty() }
    responders.register(OptionalCommand.self) { arguments, _ in OptionalCommand.Response(echo: arguments.maybe) }
    if let tls {
        responders.registerStartTLS(StartTLS.self) { _, _ in (AMPEmpty(), tls) }
    }
    return responders
}

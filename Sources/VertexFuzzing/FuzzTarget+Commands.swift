import AMP
import NIOCore
import Q2Q
import Sigma

extension FuzzTarget {
    /// Every command Vertex answers or calls, Q2Q's and Sigma's: boxes decoded as the
    /// command's arguments or response (the input chooses which) give a value, or a
    /// thrown error; a value encodes to a box that decodes again, and encoding is stable.
    static let ampCommands = FuzzTarget("amp-commands", "arguments and responses of every Q2Q and Sigma command, from boxes") { input in
        let selector = Int(input.byte())
        let command = commands[(selector >> 1) % commands.count]
        guard let boxes = try? AMPBoxParser.boxes(in: ByteBuffer(bytes: input.rest())) else { return }
        for box in boxes { checkCommand(command, box, response: selector & 1 == 1) }
    }

    static let commands: [any AMPCommand.Type] = [
        // Presence and connections (Q2Q)
        Identify.self, Secure.self, Sign.self, WhoAmI.self, SourceIP.self, AddUser.self, Listen.self,
        DirectPathsQuery.self, Inbound.self, RetrieveConnection.self, BindUDP.self, ServerTime.self, CheckReachable.self,
        // Relayed virtual channels (Q2Q)
        Virtual.self, Write.self, Q2Q.Close.self, Credit.self, Choke.self, Unchoke.self,
        // Sigma
        PutShare.self, GetShare.self, FetchManifest.self, FetchHashes.self, HavePieces.self, RequestPiece.self,
        CancelPiece.self, RejectPiece.self, PieceData.self, IntroducePeer.self,
        StartTLS.self,
    ]

    static func checkCommand<Command: AMPCommand>(_ command: Command.Type, _ box: AMPBox, response: Bool) {
        if response {
            checkBoxCodable(Command.Response.self, box, what: "\(Command.name) response")
        } else {
            checkBoxCodable(Command.Arguments.self, box, what: "\(Command.name) arguments")
        }
        // A declared error from the same box's strings, when it has them.
        if let code = box.string("_error_code"), let description = box.string("_error_description") {
            _ = Command.Failure(code: code, description: description)
        }
    }

    static func checkBoxCodable<Value: Codable>(_ type: Value.Type, _ box: AMPBox, what: String) {
        guard let value = try? AMPBoxDecoder().decode(Value.self, from: box) else { return }
        let encoded: AMPBox
        do { encoded = try AMPBoxEncoder().encode(value) } catch {
            // A value that decoded may still be too large to send back (a list that grew
            // by its encoding); refusing is right, trapping is not.
            return
        }
        guard let again = try? AMPBoxDecoder().decode(Value.self, from: encoded) else {
            fail("\(what) re-encode to \(encoded), which does not decode")
        }
        let encodedAgain = try? AMPBoxEncoder().encode(again)
        require(encodedAgain == encoded, "\(what) encode differently the second time: \(encoded) then \(String(describing: encodedAgain))")
    }
}

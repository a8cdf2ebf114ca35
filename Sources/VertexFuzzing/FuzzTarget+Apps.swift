import Foundation
import NIOCore
import Q2Q
import Sigma
import VertexApps

extension FuzzTarget {
    /// File transfer's control messages, as a receiver reads them (a 4-byte length,
    /// then JSON), and its check of an offer against a real directory holding a file,
    /// a directory and a symbolic link: a message that decodes re-frames and decodes to
    /// itself; an offer the receiver takes writes only inside its directory, over
    /// nothing, and through no link.
    static let fileTransfer = FuzzTarget("file-transfer", "file transfer framing, messages and the receiver's offer check") { input in
        let selector = input.byte()
        var frame = ByteBuffer(bytes: input.rest())
        guard let length = frame.readInteger(as: UInt32.self), Int(length) <= FileTransferMessage.maximumMessageSize,
              let body = frame.readBytes(length: min(Int(length), frame.readableBytes)) else { return }
        switch selector % 4 {
        case 0:
            guard let offer = checkFramed(FileTransferMessage.Offer.self, body) else { return }
            checkOffer(offer, allowHidden: selector & 0x80 != 0)
        case 1: _ = checkFramed(FileTransferMessage.Answer.self, body)
        case 2: _ = checkFramed(FileTransferMessage.Start.self, body)
        default: _ = checkFramed(FileTransferMessage.Result.self, body)
        }
    }

    static func checkFramed<Message: Codable & Equatable>(_ type: Message.Type, _ body: [UInt8]) -> Message? {
        guard let message = try? FileTransferMessage.decode(Message.self, from: body) else { return nil }
        guard var framed = try? FileTransferMessage.frame(message),
              let length = framed.readInteger(as: UInt32.self), Int(length) == framed.readableBytes else {
            fail("\(message) does not frame")
        }
        require((try? FileTransferMessage.decode(Message.self, from: framed.readableBytesView)) == message,
                "\(message) does not survive frame → decode")
        return message
    }

    /// A receiving directory with something in it, made once per process.
    static let receiving: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("vertex-fuzz-receive-\(getpid())")
        try? FileManager.default.createDirectory(at: root.appendingPathComponent("dir"), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root.appendingPathComponent("exists").path, contents: Data("x".utf8))
        try? FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("link").path, withDestinationPath: "/")
        return root
    }()
    static let sender = try! Q2QAddress("fuzz@example.test")

    static func checkOffer(_ offer: FileTransferMessage.Offer, allowHidden: Bool) {
        guard FileReceiver.check(offer, from: sender, directory: receiving, allowHidden: allowHidden) == nil else { return }
        let root = receiving.standardizedFileURL.path + "/"
        for file in offer.files {
            let target = receiving.appendingPathComponent(file.name).standardizedFileURL.path
            require(target.hasPrefix(root), "an accepted offer writes \(file.name.debugDescription) outside the directory")
            let components = file.name.split(separator: "/", omittingEmptySubsequences: false)
            require(components.first != "link", "an accepted offer writes \(file.name.debugDescription) through a symbolic link")
            require(file.name != "exists" && file.name != "dir", "an accepted offer writes over \(file.name.debugDescription)")
            require(allowHidden || !components.contains { $0.hasPrefix(".") }, "an accepted offer writes a hidden path")
            require(file.size >= 0 && file.size <= FileTransferMessage.maximumFileSize, "an accepted offer has a size of \(file.size)")
        }
        require(Set(offer.files.map(\.name)).count == offer.files.count, "an accepted offer names a file twice")
    }

    /// Sigma's manifests, share links and have-maps: the manifest decoder takes only the
    /// canonical form (so decode → encode is the identity, and the id is the hash of
    /// exactly those bytes), a link prints to text that parses to the same link, and a
    /// have-map round-trips.
    static let sigma = FuzzTarget("sigma", "Sigma manifests, share links and have-maps") { input in
        let selector = input.byte()
        let bytes = input.rest()
        switch selector % 3 {
        case 0:
            guard let manifest = try? ShareManifest.decode(bytes) else { return }
            require(manifest.encoded() == bytes, "a manifest decoded from bytes that are not its canonical form")
            require((try? ShareManifest.decode(manifest.encoded())) == manifest, "a manifest does not survive encode → decode")
        case 1:
            guard let text = String(validating: bytes, as: UTF8.self), let link = try? ShareLink(text) else { return }
            require((try? ShareLink(link.description)) == link, "\(link) does not survive print → parse")
        default:
            checkArgument(BitArray.self, ByteBuffer(bytes: bytes))
        }
    }
}

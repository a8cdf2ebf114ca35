import AMP
import Crypto
import Foundation
import NIOCore
@testable import Q2Q
@testable import Sigma
import Testing

/// Peers that lie, corrupt or flood: each gets a clear error or is dropped with a logged
/// reason; nothing unverified is kept; the node goes on serving everyone else.
@Suite("Sigma against bad peers")
struct SigmaBadInputTests {
    /// A Q2Q node for a rogue peer that speaks Sigma's commands by hand.
    /// It takes the commands that get no answer and does nothing with them.
    static func rogue(_ name: String, in domain: TestDomain, answering given: AMPResponders = AMPResponders()) async throws -> (Q2QNode, Q2QAddress) {
        var responders = given
        responders.register(IntroducePeer.self) { _, _ in AMPEmpty() }
        responders.register(HavePieces.self) { _, _ in AMPEmpty() }
        responders.register(RequestPiece.self) { _, _ in AMPEmpty() }
        responders.register(CancelPiece.self) { _, _ in AMPEmpty() }
        responders.register(RejectPiece.self) { _, _ in AMPEmpty() }
        let address = try Q2QAddress("\(name)@\(domain.name)")
        let node = try await makeNode(address.description, in: domain)
        let answering = responders
        _ = try await node.serveAMP(as: address, service: Sigma.service) { _ in answering }
        return (node, address)
    }

    @Test("a peer serving corrupted pieces is detected and dropped; the download finishes byte-exact from the honest holder")
    func corruptedHolder() async throws {
        try await withDomain { domain in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let source = directory.appendingPathComponent("film.bin")
                let content = pseudoRandomBytes(2 << 20, seed: 21)
                try Data(content).write(to: source)
                let nodes = try await makeSigmaNodes(["seed", "bad", "good", "late"], in: domain)
                let (seed, bad, good, late) = (nodes[0], nodes[1], nodes[2], nodes[3])
                let shared = try await seed.share(source, access: ShareAccess(isPublic: true))
                var link = seed.link(for: shared)
                for (node, name) in [(bad, "bad"), (good, "good")] {
                    let target = directory.appendingPathComponent(name)
                    try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                    _ = try await node.fetch(link, into: target).waitUntilComplete()
                }
                await seed.shutdown()
                // Bit rot (or malice) on one holder: every piece it sends is now wrong.
                let handle = try FileHandle(forUpdating: directory.appendingPathComponent("bad/film.bin"))
                for offset in stride(from: 100, to: content.count, by: 16_384) {
                    try handle.seek(toOffset: UInt64(offset))
                    try handle.write(contentsOf: Data([content[offset] ^ 0xFF]))
                }
                try handle.close()

                link.holders = [bad.address, good.address]
                let target = directory.appendingPathComponent("late")
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                let download = try await late.fetch(link, into: target)
                let url = try await download.waitUntilComplete()
                #expect(try Data(contentsOf: url) == Data(content))
                let statistics = await download.currentStatistics
                #expect(statistics.piecesRejected >= 1 && statistics.piecesRejected <= SigmaSwarm.maximumFailures)
                #expect(statistics.peersBanned == 1)
                #expect(await download.banned == [bad.address])
                await shutdown(nodes)
            }
        }
    }

    @Test("Get with a have-map of the wrong length or for an unknown share, Put from a sender not authorized: declared errors")
    func refusedCalls() async throws {
        try await withDomain { domain in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let source = directory.appendingPathComponent("a.bin")
                try Data(pseudoRandomBytes(100_000, seed: 22)).write(to: source)
                let victims = try await makeSigmaNodes(["victim"], in: domain) { _ in
                    SigmaNode.Receiving(directory: directory) { _ in false }
                }
                let victim = victims[0]
                let shared = try await victim.share(source, access: ShareAccess(isPublic: true))
                let (rogueNode, rogue) = try await Self.rogue("rogue", in: domain)
                let connection = try await rogueNode.ampConnection(from: rogue, to: victim.address, service: Sigma.service)

                let wrongLength = await #expect(throws: SigmaError.self) {
                    try await connection.call(GetShare.self, .init(share: shared.id.description, mask: BitArray(count: 7)))
                }
                #expect(wrongLength?.code == "BadRequest" && wrongLength?.errorDescription.contains("have-map") == true)
                let unknown = await #expect(throws: SigmaError.self) {
                    try await connection.call(GetShare.self, .init(share: String(repeating: "ab", count: 32), mask: nil))
                }
                #expect(unknown?.code == "UnknownShare")
                let put = await #expect(throws: SigmaError.self) {
                    try await connection.call(PutShare.self, .init(share: shared.id.description, kind: "file", name: "x", size: 1))
                }
                #expect(put?.code == "NotAllowed" && put?.errorDescription.contains("vertex authorize") == true)
                let badHashes = await #expect(throws: SigmaError.self) {
                    try await connection.call(FetchHashes.self, .init(share: shared.id.description, file: 0, first: 5, count: 3_000))
                }
                #expect(badHashes?.code == "BadRequest")
                // The connection still serves: a proper Get is answered.
                let answer = try await connection.call(GetShare.self, .init(share: shared.id.description, mask: nil))
                #expect(answer.mask.isComplete && answer.public)
                await rogueNode.shutdown()
                await shutdown(victims)
            }
        }
    }

    @Test("a manifest with '..', an absolute path or a duplicate name is refused, even when it hashes to the link's id")
    func hostileManifests() async throws {
        try await withDomain { domain in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let hostile = [
                    "sigma-manifest 1 dir album\n5 \(String(repeating: "ab", count: 32)) album/../../.bashrc\n",
                    "sigma-manifest 1 dir album\n5 \(String(repeating: "ab", count: 32)) /etc/passwd\n",
                    "sigma-manifest 1 dir album\n5 \(String(repeating: "ab", count: 32)) album/a\n5 \(String(repeating: "cd", count: 32)) album/a\n",
                ]
                let victims = try await makeSigmaNodes(["victim"], in: domain)
                for (index, text) in hostile.enumerated() {
                    let bytes = Array(text.utf8)
                    var responders = AMPResponders()
                    responders.register(FetchManifest.self) { _, _ in .init(total: bytes.count, chunk: AMPBytes(bytes)) }
                    let (rogueNode, rogue) = try await Self.rogue("rogue\(index)", in: domain, answering: responders)
                    let link = ShareLink(id: ShareID(Array(SHA256.hash(data: bytes))), kind: .directory, name: "album", size: 5, holders: [rogue])
                    let error = await #expect(throws: ShareError.self) {
                        _ = try await victims[0].fetch(link, into: directory)
                    }
                    #expect(error?.description.contains("bad share manifest") == true, "\(error.map { "\($0)" } ?? "")")
                    await rogueNode.shutdown()
                }
                #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty, "nothing written")
                await shutdown(victims)
            }
        }
    }

    @Test("a holder sending a body longer than the piece, pieces out of range and a flood of unrequested Data is dropped; the download finishes from the seeder, nothing unverified kept")
    func floodingHolder() async throws {
        try await withDomain { domain in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let source = directory.appendingPathComponent("film.bin")
                let content = pseudoRandomBytes(1 << 20, seed: 23)
                try Data(content).write(to: source)
                let nodes = try await makeSigmaNodes(["seed"], in: domain, uploadRate: 400_000)
                let victims = try await makeSigmaNodes(["victim"], in: domain)
                let shared = try await nodes[0].share(source, access: ShareAccess(isPublic: true))
                let (rogueNode, rogue) = try await Self.rogue("rogue", in: domain)
                var link = nodes[0].link(for: shared)
                link.holders.append(rogue)
                let download = try await victims[0].fetch(link, into: directory.appendingPathComponent("in").creating())
                let share = shared.id.description
                // The rogue joins, claiming to hold everything, and then misbehaves.
                let connection = try await rogueNode.ampConnection(from: rogue, to: victims[0].address, service: Sigma.service)
                _ = try await connection.call(GetShare.self, .init(share: share, mask: BitArray(count: 32, filled: true), complete: true))
                try connection.sendWithoutWaiting(PieceData.self, .init(share: share, piece: 0, offset: 0,
                                                                        body: AMPBytes([UInt8](repeating: 1, count: 40_000))))
                try connection.sendWithoutWaiting(RequestPiece.self, .init(share: share, piece: 1_000_000))
                try connection.sendWithoutWaiting(HavePieces.self, .init(share: share, pieces: AMPBytes([0, 0, 0])))
                for piece in 0..<64 {
                    try connection.sendWithoutWaiting(PieceData.self, .init(share: share, piece: piece % 32, offset: 32_768,
                                                                            body: AMPBytes([UInt8](repeating: 2, count: 10))))
                }
                let url = try await download.waitUntilComplete()
                #expect(try Data(contentsOf: url) == Data(content))
                #expect(await download.banned.contains(rogue))
                #expect(await download.currentStatistics.piecesRejected == 0, "nothing the rogue sent got as far as verification")
                await rogueNode.shutdown()
                await shutdown(nodes + victims)
            }
        }
    }
}

extension URL {
    /// Creates the directory (and its parents) and returns it.
    func creating() throws -> URL {
        try FileManager.default.createDirectory(at: self, withIntermediateDirectories: true)
        return self
    }
}

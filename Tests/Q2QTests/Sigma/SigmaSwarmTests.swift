import AMP
import Foundation
import NIOCore
@testable import Q2Q
@testable import Sigma
import Testing

/// Sigma nodes for `names` on `domain`, each with its own Q2Q node.
func makeSigmaNodes(_ names: [String], in domain: TestDomain, uploadRate: Int? = nil,
                    receiving: ((Q2QAddress) -> SigmaNode.Receiving?)? = nil) async throws -> [SigmaNode] {
    var nodes: [SigmaNode] = []
    for name in names {
        let address = try Q2QAddress("\(name)@\(domain.name)")
        let node = try await makeNode(address.description, in: domain)
        nodes.append(try await SigmaNode.start(node: node, as: address, uploadRate: uploadRate, receiving: receiving?(address)))
    }
    return nodes
}

func shutdown(_ nodes: [SigmaNode]) async {
    for node in nodes {
        await node.shutdown()
        await node.context.node.shutdown()
    }
}

@Suite("Sigma swarms (in process)")
struct SigmaSwarmTests {
    @Test("a seeder and three downloaders: every download is byte-exact, and the downloaders trade pieces among themselves")
    func swarm() async throws {
        try await withDomain { domain in
            try await withTemporaryDirectory { directory in
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let source = directory.appendingPathComponent("film.bin")
                let content = pseudoRandomBytes(3 << 20 + 12_345, seed: 7)
                try Data(content).write(to: source)
                let nodes = try await makeSigmaNodes(["seed", "b", "c", "d"], in: domain, uploadRate: 4_000_000)
                let downloaders = Array(nodes.dropFirst())
                let swarm = try await nodes[0].share(source, access: ShareAccess(allowed: Set(downloaders.map(\.address))))
                let link = nodes[0].link(for: swarm)
                let results = try await withThrowingTaskGroup(of: (URL, SwarmStatistics).self) { group in
                    for (index, node) in downloaders.enumerated() {
                        let target = directory.appendingPathComponent("d\(index)")
                        try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
                        group.addTask {
                            let download = try await node.fetch(link, into: target)
                            let url = try await download.waitUntilComplete()
                            return (url, await download.currentStatistics)
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                for (url, statistics) in results {
                    #expect(try Data(contentsOf: url) == Data(content))
                    #expect(statistics.piecesRejected == 0)
                }
                let seeded = await swarm.currentStatistics.bytesUploaded
                let fromPeers = results.map(\.1.bytesUploaded).reduce(0, +)
                #expect(fromPeers > 0, "downloaders uploaded to each other")
                print("sigma swarm: seeder uploaded \(seeded) bytes of \(content.count); downloaders \(fromPeers)")
                await shutdown(nodes)
            }
        }
    }
}

import AMP
import Foundation
@testable import Q2Q
import Testing
import VertexFuzzing

/// The fuzz targets' properties (Sources/VertexFuzzing) over the corpus kept in the
/// repository, so that every input a campaign found interesting — and every finding —
/// is checked on each run of the suite, without libFuzzer. A broken property stops the
/// test process with the target's message.
@Suite("Fuzz corpus and findings")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus").standardizedFileURL

    @Test("every target keeps its properties on its whole corpus", arguments: FuzzTarget.all.map(\.name))
    func corpus(target name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let directory = Self.corpus.appendingPathComponent(name)
        let files = try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
        #expect(files.count >= 3, "Fuzz/corpus/\(name) has \(files.count) inputs")
        for file in files { target.check(try Data(contentsOf: file)) }
    }

    @Test("finding q2q-arguments 892cb763: a bracketed host that is no IPv6 address is refused, so every HostPort prints as text that parses back")
    func findingHostPortBrackets() throws {
        let input = Array(Data(base64Encoded: "AVtbAnBAOzlAXTow")!)  // the reproducer libFuzzer wrote
        FuzzTarget.named("q2q-arguments")!.check(input)
        #expect(HostPort("[[\u{2}p@;9@]:0") == nil)
        #expect(HostPort("[name]:1") == nil)
        #expect(HostPort("a b:1") == nil)
        #expect(HostPort("[::1]:80")?.description == "[::1]:80")
        #expect(HostPort("example.test:8788")?.description == "example.test:8788")
    }

    @Test("finding amp-arguments 05ecb36d: a Decimal whose exponent would pass ±999,999,999 when written is refused, not changed in transit")
    func findingDecimalExponent() throws {
        let input = Array(Data(base64Encoded: "NTMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMUUzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzXzMzMzMzMzMzMzMzMzMzMzMzMzMzMw==")!)
        FuzzTarget.named("amp-arguments")!.check(input)
        #expect(AMPDecimal("3.3E+1000000026") == nil)
        #expect(AMPDecimal("1E+999999999") == nil)
        #expect(AMPDecimal("123E+999999997") == nil)
        #expect(AMPDecimal("1E+999999998")?.description == "1E+999999998")
        #expect(AMPDecimal("1E-999999998")?.description == "1E-999999998")
    }
}

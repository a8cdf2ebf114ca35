import CLibFuzzer
import Foundation
import VertexFuzzing

// One libFuzzer executable for every target: `scripts/fuzz/run` links it as
// `fuzz-<target>` for each of them, and the name it is started by chooses the target
// (or VERTEX_FUZZ_TARGET). Built only with VERTEX_FUZZ=1 and -sanitize=fuzzer.

/// The target this process fuzzes, chosen once from how it was started.
let selected: FuzzTarget = {
    let environment = ProcessInfo.processInfo.environment["VERTEX_FUZZ_TARGET"]
    let invokedAs = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
    let name = environment ?? (invokedAs.hasPrefix("fuzz-") ? String(invokedAs.dropFirst(5)) : invokedAs)
    guard let target = FuzzTarget.named(name) else {
        let names = FuzzTarget.all.map(\.name).joined(separator: ", ")
        fatalError("no fuzz target '\(name)': start this as fuzz-<target> or set VERTEX_FUZZ_TARGET (targets: \(names))")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.check(data, size)
}

@_cdecl("VertexFuzzer_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    _ = selected  // a wrong name fails before libFuzzer starts
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in testOneInput(data, size) }
}

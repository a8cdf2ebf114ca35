/// A decoder that faces the network or a file, with the properties it must keep on
/// any input. libFuzzer executables (`Fuzz/`, built by `scripts/fuzz/run`) feed them
/// coverage-guided input; the test suite feeds them the corpus in `Fuzz/corpus/`, so
/// every finding kept there is a regression test.
///
/// A broken property stops the process (``fail(_:file:line:)``): libFuzzer keeps the input
/// that did it as a reproducer.
public struct FuzzTarget: Sendable {
    /// The executable's name without its `fuzz-` prefix, and the corpus directory's.
    public let name: String
    /// What it decodes, in a line.
    public let summary: String
    private let body: @Sendable (inout FuzzInput) -> Void

    init(_ name: String, _ summary: String, _ body: @escaping @Sendable (inout FuzzInput) -> Void) {
        self.name = name
        self.summary = summary
        self.body = body
    }

    /// Runs the checks on one input.
    public func check(_ bytes: some Collection<UInt8>) {
        var input = FuzzInput(Array(bytes))
        body(&input)
    }

    /// The entry libFuzzer calls (`LLVMFuzzerTestOneInput`).
    public func check(_ data: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
        check(UnsafeBufferPointer(start: data, count: data == nil ? 0 : count))
        return 0
    }
}

extension FuzzTarget {
    /// Every target, in the order `scripts/fuzz/run` runs them.
    public static let all: [FuzzTarget] = [
        .ampBox, .ampArguments, .ampCommands, .q2qArguments, .addressDiscovery, .portMapping,
        .ptcpPacket, .ptcpConnection, .fileTransfer, .sigma,
    ]

    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// The bytes of one input, read from the front as choices and from wherever as data.
public struct FuzzInput {
    public private(set) var bytes: ArraySlice<UInt8>

    public init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    public var isEmpty: Bool { bytes.isEmpty }

    /// One byte (0 once the input is used up).
    public mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }

    /// A 16-bit number, big-endian.
    public mutating func uint16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    /// Up to `count` bytes.
    public mutating func take(_ count: Int) -> [UInt8] {
        let taken = bytes.prefix(count)
        bytes = bytes.dropFirst(taken.count)
        return Array(taken)
    }

    /// What is left.
    public mutating func rest() -> [UInt8] { take(bytes.count) }

    /// A chunk behind a one-byte length (the shape the connection targets use, so that
    /// one input carries several datagrams).
    public mutating func chunk() -> [UInt8] { take(Int(byte())) }
}

/// A property that does not hold: the process stops so that libFuzzer keeps the input.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fail(message(), file: file, line: line) }
}

/// Stops the process on a broken property (libFuzzer keeps the input that did it).
func fail(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("fuzz property broken: \(message)", file: file, line: line)
}

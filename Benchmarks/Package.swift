// swift-tools-version:6.1
// Benchmarks live in their own package so that building and testing Vertex does not
// build the benchmark harness. Run: (cd Benchmarks && swift package benchmark)
import PackageDescription

let package = Package(
    name: "VertexBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "vertex", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "AMPCodec",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "AMP", package: "vertex"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/AMPCodec",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "vertex",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AMP", targets: ["AMP"]),
        .library(name: "Q2Q", targets: ["Q2Q"]),
        .library(name: "PTCP", targets: ["PTCP"]),
        .library(name: "VertexApps", targets: ["VertexApps"]),
        .library(name: "Sigma", targets: ["Sigma"]),
        .executable(name: "vertex", targets: ["vertex"]),
        .executable(name: "amp-bench", targets: ["AMPBench"]),
        .executable(name: "presence-bench", targets: ["PresenceBench"]),
        .executable(name: "connect-bench", targets: ["ConnectBench"]),
        .executable(name: "ptcp-bench", targets: ["PTCPBench"]),
        .executable(name: "soak-load", targets: ["SoakLoad"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // The local web app (vertex app). No default traits: swift-configuration is not needed.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // The presence server's metrics, and their Prometheus text format (vertex server --http).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // A domain's store shared by several presence nodes (vertex server --database postgres://…).
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // A value behind a lock ThreadSanitizer understands (Synchronization.Mutex's shape).
        .target(name: "Locking", dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")]),
        // Twisted-compatible AMP: box codec, typed arguments, commands, connections.
        .target(
            name: "AMP",
            dependencies: [
                "Locking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // No run-time exclusivity checks in release builds: they were 7 % of a
            // client's CPU with 100 calls in flight (debug builds, and so the tests, keep them).
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // PTCP v2: a reliable, congestion-controlled stream over UDP. A sans-I/O core
        // (Core, Wire) and NIO channels on one UDP socket per endpoint (Channel).
        .target(
            name: "PTCP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            // Optimised in debug builds too: the tests push 100+ MB through the core, and
            // an unoptimised core would starve the timing-sensitive tests running beside them.
            // Exclusivity is checked at compile time only: at run time it cost ~5 % of a
            // receiving endpoint (every access to a connection's state, per datagram).
            swiftSettings: [.unsafeFlags(["-O", "-enforce-exclusivity=unchecked"])]
        ),
        // Two PTCP cores over simulated lossy links on a simulated clock (tests, ptcp-bench).
        .target(name: "PTCPSimulator", dependencies: ["PTCP"], swiftSettings: [.unsafeFlags(["-O"])]),
        // Q2Q: addresses, identities (keys, certificates, pins), storage, the presence
        // server and the client side that talks to it.
        .target(
            name: "Q2Q",
            dependencies: [
                "Locking",
                "AMP",
                "PTCP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // What Swift's Glibc module does not offer: the file receiver's writeback, the
        // allocator settings of the vertex command.
        .target(name: "CVertexSystem"),
        // Apps on Q2Q streams: file transfer.
        .target(
            name: "VertexApps",
            dependencies: [
                "Locking",
                "CVertexSystem",
                "Q2Q",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Sigma: shares named by BEP 52 hash-tree roots, fetched from a swarm of peers over
        // the connection cache, every piece verified locally.
        .target(
            name: "Sigma",
            dependencies: [
                "Locking",
                "AMP",
                "Q2Q",
                "VertexApps",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Hashing and piece bookkeeping run per 16 KiB: optimised in debug builds too,
            // so that the tests' swarms are not held up by the unoptimised build.
            swiftSettings: [.unsafeFlags(["-O"])]
        ),
        // vertex app: a node for the user's identities and a local web page over it
        // (sign in, contacts, prompts for incoming files, sending with live progress).
        .target(
            name: "VertexWebApp",
            dependencies: [
                "Locking",
                "Q2Q",
                "VertexApps",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The presence store on PostgreSQL, for a domain served by several nodes.
        .target(
            name: "PresencePostgres",
            dependencies: [
                "Q2Q",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // vertex server --http: Prometheus metrics and the status page.
        .target(
            name: "PresenceHTTP",
            dependencies: [
                "Q2Q",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "vertex",
            dependencies: [
                "PresenceHTTP",
                "PresencePostgres",
                "VertexWebApp",
                "Locking",
                "CVertexSystem",
                "AMP",
                "Q2Q",
                "VertexApps",
                "Sigma",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
        // Echo client and server used by scripts/bench/amp-vs-twisted.
        .executableTarget(
            name: "AMPBench",
            dependencies: [
                "AMP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Real child processes for integration tests (the vertex CLI, Twisted peers).
        .target(
            name: "VertexTestSupport",
            dependencies: [
                "PTCPSimulator",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/VertexTestSupport"
        ),
        // PTCP throughput: the core on a simulated link, and real endpoints (scripts/bench/ptcp-vs-tcp).
        .executableTarget(
            name: "PTCPBench",
            dependencies: [
                "PTCP",
                "PTCPSimulator",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        // Time to a first echoed byte, used by scripts/bench/connect-latency.
        .executableTarget(
            name: "ConnectBench",
            dependencies: [
                "Q2Q",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Load on a presence server, used by scripts/bench/presence-load.
        .executableTarget(
            name: "PresenceBench",
            dependencies: [
                "AMP",
                "Q2Q",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The properties every network- and file-facing decoder keeps on any input: run by
        // the libFuzzer executable below, and over Fuzz/corpus by the tests.
        .target(
            name: "VertexFuzzing",
            dependencies: [
                "AMP",
                "PTCP",
                "Q2Q",
                "VertexApps",
                "Sigma",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Mixed load on a presence server for hours, sampling it (scripts/soak/presence).
        .executableTarget(
            name: "SoakLoad",
            dependencies: [
                "Locking",
                "AMP",
                "Q2Q",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "Q2QTests",
            dependencies: [
                "Locking",
                "Q2Q",
                "VertexApps",
                "VertexWebApp",
                "PresencePostgres",
                "Sigma",
                "AMP",
                "VertexFuzzing",
                "VertexTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .testTarget(
            name: "PTCPTests",
            dependencies: [
                "PTCP",
                "PTCPSimulator",
                "VertexTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "AMPTests",
            dependencies: [
                "Locking",
                "AMP",
                "VertexTestSupport",
                "Q2Q",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// The libFuzzer executable (`scripts/fuzz/run`): it links only with -sanitize=fuzzer and
// -parse-as-library, so it is part of the package only when VERTEX_FUZZ is set.
if Context.environment["VERTEX_FUZZ"] != nil {
    package.products.append(.executable(name: "vertex-fuzzer", targets: ["VertexFuzzer"]))
    package.targets += [
        .target(name: "CLibFuzzer", path: "Fuzz/CLibFuzzer"),
        .executableTarget(name: "VertexFuzzer", dependencies: ["CLibFuzzer", "VertexFuzzing"], path: "Fuzz/VertexFuzzer"),
    ]
}

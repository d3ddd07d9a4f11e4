// swift-tools-version: 6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "mcpgw",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mcpgw", targets: ["mcpgw"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "StrictJSON",
            swiftSettings: strictSettings
        ),
        .target(
            name: "TLS",
            dependencies: [
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Redis",
            dependencies: [
                "TLS", "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Identity",
            dependencies: ["TLS", "COpenSSL", "StrictJSON"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Policy",
            dependencies: ["StrictJSON"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Gateway",
            dependencies: [
                "TLS", "Identity", "Policy", "StrictJSON", "Redis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "MCPDemoServer",
            dependencies: [
                "StrictJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "mcpgw",
            dependencies: [
                "Gateway", "TLS", "Identity", "Policy", "StrictJSON", "MCPDemoServer",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings,
            // The release binary allocates with mimalloc (Debian: libmimalloc-dev), in place of glibc's malloc:
            // about 4 % less CPU per call (docs/architecture.md, "Memory allocator"). Debug, sanitizer and fuzz
            // builds keep the system allocator, which the sanitizers replace with their own.
            linkerSettings: [.linkedLibrary("mimalloc", .when(platforms: [.linux], configuration: .release))]
        ),
        .executableTarget(
            name: "mcpgw-fuzz",
            dependencies: [
                "Gateway", "TLS", "Identity", "Policy", "StrictJSON",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "mcpgw-bench",
            dependencies: ["Identity", "Policy", "StrictJSON"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "TestSupport",
            dependencies: [
                "TLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "TLSTests",
            dependencies: [
                "TLS", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "IdentityTests",
            dependencies: ["Identity", "TLS", "StrictJSON", "TestSupport"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrictJSONTests",
            dependencies: ["StrictJSON"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PolicyTests",
            dependencies: ["Policy"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "TLS", "TestSupport", "Identity", "Policy", "StrictJSON", "MCPDemoServer", "Redis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
    ]
)

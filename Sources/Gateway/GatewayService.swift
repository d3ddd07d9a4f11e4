public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle

/// The gateway as a swift-service-lifecycle `Service`: binds in `run()`, serves until graceful shutdown.
public struct GatewayService: Service {
    private let configuration: GatewayConfiguration
    private let services: GatewayServices?
    private let logger: Logger

    /// A service that will listen as `configuration` says, serving the MCP endpoint with `services`.
    public init(configuration: GatewayConfiguration, services: GatewayServices? = nil, logger: Logger) {
        self.configuration = configuration
        self.services = services
        self.logger = logger
    }

    public func run() async throws {
        // One event loop per core by default (the shared group has exactly that many).
        let ownGroup = configuration.eventLoopThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) }
        let group: any EventLoopGroup = ownGroup ?? MultiThreadedEventLoopGroup.singleton
        let listener = try await GatewayListener.bind(configuration: configuration, services: services, logger: logger, group: group)
        // Wait for SIGTERM/SIGINT (graceful shutdown) or cancellation, then drain: requests in flight finish (or are
        // closed after the grace period, writing their records), and only then is the audit log written out.
        try? await gracefulShutdown()
        try await listener.shutdown()
        if let services {
            await services.upstream.shutdown()
            services.audit.close()
            logger.info("audit log flushed", metadata: ["audit.records": "\(services.audit.writtenRecords)"])
        }
        try? await ownGroup?.shutdownGracefully()
    }
}

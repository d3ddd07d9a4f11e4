public import Logging
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
        let listener = try await GatewayListener.bind(configuration: configuration, services: services, logger: logger)
        // Wait for SIGTERM/SIGINT (graceful shutdown) or cancellation, then drain: requests in flight finish, then
        // the audit log is written out and the upstream client stops.
        try? await gracefulShutdown()
        try await listener.shutdown()
        if let services {
            services.audit.close()
            try? await services.httpClient.shutdown()
            logger.info("audit log flushed", metadata: ["audit.records": "\(services.audit.writtenRecords)"])
        }
    }
}

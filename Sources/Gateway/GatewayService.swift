public import Logging
public import ServiceLifecycle

/// The gateway as a swift-service-lifecycle `Service`: binds in `run()`, serves until graceful shutdown.
public struct GatewayService: Service {
    private let configuration: GatewayConfiguration
    private let logger: Logger

    /// A service that will listen as `configuration` says.
    public init(configuration: GatewayConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let listener = try await GatewayListener.bind(configuration: configuration, logger: logger)
        // Wait for SIGTERM/SIGINT (graceful shutdown) or cancellation, then drain.
        try? await gracefulShutdown()
        try await listener.shutdown()
    }
}

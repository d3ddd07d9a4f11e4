import Foundation
public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
public import TLS

/// The gateway as a swift-service-lifecycle `Service`: binds in `run()`, serves until graceful shutdown.
public struct GatewayService: Service {
    private let configuration: GatewayConfiguration
    private let services: GatewayServices?
    private let tlsContexts: TLSContextStore?
    private let logger: Logger

    /// A service that will listen as `configuration` says, serving the MCP endpoint with `services`.
    /// `tlsContexts`: the listener's TLS contexts, when the caller reloads them (SIGHUP).
    public init(
        configuration: GatewayConfiguration, services: GatewayServices? = nil, tlsContexts: TLSContextStore? = nil, logger: Logger
    ) {
        self.configuration = configuration
        self.services = services
        self.tlsContexts = tlsContexts
        self.logger = logger
    }

    public func run() async throws {
        // One event loop per core the process may run on (so `taskset -c 1 mcpgw` runs one loop), unless configured.
        let ownGroup = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoopThreads ?? Self.usableCores())
        let group: any EventLoopGroup = ownGroup
        logger.info("event loops", metadata: ["event_loops": "\(configuration.eventLoopThreads ?? Self.usableCores())"])
        let listener = try await GatewayListener.bind(
            configuration: configuration, services: services, tlsContexts: tlsContexts, logger: logger, group: group)
        // Wait for SIGTERM/SIGINT (graceful shutdown) or cancellation, then drain: requests in flight finish (or are
        // closed after the grace period, writing their records), and only then is the audit log written out.
        try? await gracefulShutdown()
        try await listener.shutdown()
        if let services {
            await services.upstream.shutdown()
            services.sharedLimits?.shutdown()
            let lost = services.audit.close()
            logger.info("audit log flushed", metadata: ["audit.records": "\(services.audit.writtenRecords)"])
            if lost > 0 {
                // A supervisor must be able to tell: the exit status says records were lost.
                try? await ownGroup.shutdownGracefully()
                throw GatewayError.auditRecordsLost(bytes: lost)
            }
        }
        try? await ownGroup.shutdownGracefully()
    }

    /// The CPUs in this process's affinity mask (at least 1).
    static func usableCores() -> Int {
        // Linux reports the mask in /proc/self/status as "Cpus_allowed:\t<hex words separated by commas>".
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
        else { return System.coreCount }
        let count = line.dropFirst("Cpus_allowed:".count).reduce(0) { count, character in
            count + (character.hexDigitValue?.nonzeroBitCount ?? 0)
        }
        return max(1, min(count, System.coreCount))
    }
}

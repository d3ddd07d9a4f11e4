public import Logging
public import NIOCore
import NIOHTTP1
public import NIOPosix
import TLS

/// A bound listener: TLS (or, explicitly, plain HTTP) → HTTP/1.1 → the gateway's handlers.
public final class GatewayListener: Sendable {
    /// The address the listener is bound to (with the real port when port 0 was asked for).
    public let localAddress: SocketAddress
    private let serverChannel: any Channel
    private let connections: ConnectionRegistry
    private let configuration: GatewayConfiguration
    private let logger: Logger

    private init(
        serverChannel: any Channel, connections: ConnectionRegistry, configuration: GatewayConfiguration, logger: Logger
    ) {
        self.serverChannel = serverChannel
        self.localAddress = serverChannel.localAddress!
        self.connections = connections
        self.configuration = configuration
        self.logger = logger
    }

    /// Validates the configuration, builds the TLS context and binds. Fails with a clear error on a bad
    /// certificate, key or address; nothing is served until every part is valid.
    public static func bind(
        configuration: GatewayConfiguration, services: GatewayServices? = nil, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> GatewayListener {
        let tlsContext: TLSContext?
        if let tls = configuration.tls {
            tlsContext = try TLSContext(role: .server, configuration: tls)
        } else if configuration.allowInsecurePlainHTTP {
            tlsContext = nil
            logger.warning("serving plain HTTP without TLS: credentials and tool arguments cross the network in clear text")
        } else {
            throw GatewayError.plainHTTPNotAllowed
        }
        let connections = ConnectionRegistry()
        let idleTimeout = TimeAmount(configuration.idleTimeout)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard connections.count < configuration.maximumConnections else {
                    logger.warning("connection refused: \(configuration.maximumConnections) connections already open",
                                   metadata: ["peer.address": "\(channel.remoteAddress?.hostAndPort ?? "unknown")"])
                    return channel.close()
                }
                connections.track(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tlsContext {
                        try pipeline.addHandler(TLSHandler(context: tlsContext, logger: logger))
                    }
                    try pipeline.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(MCPProxyHandler(services: services))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: configuration.listen.host, port: configuration.listen.port).get()
        } catch {
            throw GatewayError.cannotListen(configuration.listen, reason: "\(error)")
        }
        let listener = GatewayListener(
            serverChannel: channel, connections: connections, configuration: configuration, logger: logger)
        logger.info(
            "listening",
            metadata: [
                "listen.address": "\(listener.localAddress.hostAndPort)", "tls": "\(tlsContext != nil)",
                "tls.client_auth": "\(configuration.tls?.clientAuthentication.rawValue ?? "none")",
                "mcp.path": "\(services?.mcpPath ?? "-")",
            ])
        return listener
    }

    /// Stops accepting, lets requests in flight finish (idle connections close at once), and closes whatever is
    /// still open after the configured grace period.
    public func shutdown() async throws {
        try? await serverChannel.close()
        connections.drainAll()
        let deadline = ContinuousClock.now + configuration.shutdownGracePeriod
        while connections.count > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        connections.closeAll()
        logger.info("listener stopped", metadata: ["listen.address": "\(localAddress.hostAndPort)", "connections.left": "\(connections.count)"])
    }
}

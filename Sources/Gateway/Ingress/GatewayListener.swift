public import Logging
public import NIOCore
import NIOHTTP1
public import NIOPosix
public import TLS

/// A bound listener: (a trusted load balancer's PROXY protocol header →) TLS (or, explicitly, plain HTTP) →
/// slow-client guard → HTTP/1.1 → the gateway's handler.
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
    ///
    /// `tlsContexts`: where new connections take their TLS context from (replaced on reload); built from
    /// `configuration.tls` when not given.
    public static func bind(
        configuration: GatewayConfiguration, services: GatewayServices? = nil, tlsContexts: TLSContextStore? = nil, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> GatewayListener {
        let tlsContext: TLSContextStore?
        if let tls = configuration.tls {
            tlsContext = try tlsContexts ?? TLSContextStore(TLSContext(role: .server, configuration: tls))
        } else if configuration.allowInsecurePlainHTTP {
            tlsContext = nil
            logger.warning("serving plain HTTP without TLS: credentials and tool arguments cross the network in clear text")
        } else {
            throw GatewayError.plainHTTPNotAllowed
        }
        let connections = ConnectionRegistry()
        // Streams outlive the decision that opened them: a reloaded trust (a CRL) reaches them at once.
        tlsContext?.onReplace { [weak connections] in connections?.trustReloaded() }
        // …and so does a reloaded identity (a JWT key removed) or a key withdrawn from a fetched set.
        services?.identity.onChange { [weak connections] in connections?.trustReloaded() }
        let idleTimeout = TimeAmount(configuration.idleTimeout)
        let limits = services?.limits ?? GatewayLimits()
        let perSource = configuration.maximumConnectionsPerSource ?? max(1, configuration.maximumConnections / 2)
        // Failed handshakes: the first of each kind in a second is logged, with how many were held back (found by
        // review: a junk record on each of 23,000 connections wrote 23,000 lines).
        let handshakeFailureLog = LogThrottle(interval: 1)
        // Refusals at accept (or once a load balancer's header named the client): counted, and logged at most once a
        // second — a flood of connections must not become a flood of log lines.
        let refused = { @Sendable (refusal: ConnectionRegistry.Refusal, client: SocketAddress?) in
            services?.metrics.connectionRefused(reason: refusal == .listenerFull ? "listener_full" : "source_full")
            guard connections.shouldLogRefusal() else { return }
            let why =
                refusal == .listenerFull
                ? "\(configuration.maximumConnections) connections already open"
                : "source already holds its share of \(perSource) connections"
            logger.warning(
                "connection refused: \(why)",
                metadata: [
                    "peer.address": "\(client?.hostAndPort ?? "unknown")", "connections.refused": "\(connections.refusedCount)",
                ])
        }
        let proxyHeaderFailureLog = LogThrottle(interval: 1)
        /// The handlers of a client connection, after any PROXY protocol header: TLS, the deadlines, the gateway's
        /// handler; `client` is the address a load balancer's header named (nil: the connection's peer).
        let addHandlers = { @Sendable (pipeline: ChannelPipeline.SynchronousOperations, client: SocketAddress?) throws in
            var tlsTrust: MCPConnectionHandler.TLSTrust?
            if let tlsContext {
                // The generation first: a reload between the two reads makes the connection check once more.
                let generation = tlsContext.generation
                let handler = TLSHandler(
                    context: tlsContext.current, logger: logger, admitsFailureLog: { handshakeFailureLog.admit($0) },
                    peerAddress: client?.hostAndPort)
                try pipeline.addHandler(handler)
                tlsTrust = .init(contexts: tlsContext, handler: handler, generation: generation)
            }
            let deadlines = ClientDeadlines(
                idleTimeout: idleTimeout, headTimeout: TimeAmount(limits.requestHeadTimeout),
                minimumBytesPerSecond: limits.minimumBodyBytesPerSecond, gracePeriod: TimeAmount(limits.bodyRateGracePeriod),
                minimumAnswerBytesPerSecond: limits.minimumAnswerBytesPerSecond,
                answerRateWindow: TimeAmount(limits.answerRateWindow))
            try pipeline.addHandler(deadlines)
            // The connection handler frames requests and encodes responses itself (HTTP/1.1; no pipelining handler
            // either: it holds pipelined requests without toggling read interest per request). A head is held only up
            // to a bound while it arrives; after a framing error nothing is held.
            try pipeline.addHandler(
                MCPConnectionHandler(
                    services: services, deadlines: deadlines, maximumHeadBytes: Self.maximumRequestHeadBytes, tlsTrust: tlsTrust,
                    client: client))
        }
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // One socket read per wake-up (NIO's default is four): what one read brings is framed before the handler
            // can stop reading, so this bounds the requests a client can queue at once.
            .childChannelOption(.maxMessagesPerRead, value: 1)
            // NIO keeps each connection's last receive buffer for its next read, so an idle connection holds one
            // of the size its reads last needed. Starting at 512 bytes instead of NIO's 2 KiB: a TLS handshake's
            // messages need 1 KiB, and larger reads grow it (doubling, up to 64 KiB) where they come. 1 KiB less per
            // idle connection (`bench/compare.sh`), the same CPU time per call (`bench/ab-cpu.sh`).
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
            .childChannelInitializer { channel in
                let proxied = configuration.proxyProtocol?.trusts(channel.remoteAddress) ?? false
                let admission = connections.admit(
                    channel, maximum: configuration.maximumConnections, perSource: perSource, sourceLater: proxied)
                if let refusal = admission {
                    refused(refusal, channel.remoteAddress)
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    guard proxied else { return try addHandlers(pipeline, nil) }
                    // A load balancer's connection: its handlers are added once its header has named the client, whose
                    // source it then counts against.
                    try pipeline.addHandler(
                        ProxyHeaderReader(
                            deadline: TimeAmount(limits.requestHeadTimeout),
                            install: { context, client in
                                let source = ClientSource.key(client)
                                guard connections.assignSource(context.channel, source: source, perSource: perSource) else {
                                    refused(.sourceFull, client)
                                    return false
                                }
                                try addHandlers(context.pipeline.syncOperations, client)
                                return true
                            },
                            refused: { why, peer in
                                services?.metrics.connectionRefused(reason: "proxy_header")
                                if let suppressed = proxyHeaderFailureLog.admit("proxy_header") {
                                    logger.warning(
                                        "connection refused: \(why)",
                                        metadata: [
                                            "peer.address": "\(peer?.hostAndPort ?? "unknown")",
                                            "similar.failures.held.back": "\(suppressed)",
                                        ])
                                }
                            }))
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

    /// The most bytes a request head may take (held until it is whole): 80 KiB, the bound NIO's decoder had.
    static let maximumRequestHeadBytes = 80 * 1024

    /// Whether the listening socket is open (false once `shutdown` has begun).
    public var isAccepting: Bool { serverChannel.isActive }

    /// Stops accepting, lets requests in flight finish (idle connections close at once), closes whatever is still
    /// open after the configured grace period, and returns once every connection is closed (every exchange has
    /// written its audit records by then).
    public func shutdown() async throws {
        try? await serverChannel.close()
        connections.drainAll()
        let deadline = ContinuousClock.now + configuration.shutdownGracePeriod
        while connections.count > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        await connections.closeAll()
        logger.info(
            "listener stopped", metadata: ["listen.address": "\(localAddress.hostAndPort)", "connections.left": "\(connections.count)"])
    }
}

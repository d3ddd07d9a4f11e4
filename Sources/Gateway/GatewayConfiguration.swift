public import TLS

/// How the gateway listens and serves. Every field has a production-safe default except the TLS files.
public struct GatewayConfiguration: Sendable {
    /// Address and port of the listener.
    public var listen: ListenAddress
    /// TLS settings of the listener. Nil serves plain HTTP, which needs `allowInsecurePlainHTTP`.
    public var tls: TLSConfiguration?
    /// Must be true for `tls == nil`: plain HTTP exposes tokens and tool arguments to the network.
    public var allowInsecurePlainHTTP: Bool
    /// A connection with no traffic for this long is closed.
    public var idleTimeout: Duration
    /// On graceful shutdown, connections still open after this long are closed anyway.
    public var shutdownGracePeriod: Duration
    /// Most client connections open at once; more are closed as soon as they are accepted (before any TLS work).
    public var maximumConnections: Int
    /// Most connections one source address may hold; nil means half of `maximumConnections`.
    public var maximumConnectionsPerSource: Int?
    /// Event loop threads; nil means one per core.
    public var eventLoopThreads: Int?
    /// Load balancers whose connections start with a PROXY protocol header naming the client; nil: none.
    public var proxyProtocol: ProxyProtocolSettings?

    /// A configuration listening on `listen` with the given TLS settings.
    public init(
        listen: ListenAddress = ListenAddress(host: "127.0.0.1", port: 8443),
        tls: TLSConfiguration?,
        allowInsecurePlainHTTP: Bool = false,
        idleTimeout: Duration = .seconds(60),
        shutdownGracePeriod: Duration = .seconds(10),
        maximumConnections: Int = 1024,
        maximumConnectionsPerSource: Int? = nil,
        eventLoopThreads: Int? = nil,
        proxyProtocol: ProxyProtocolSettings? = nil
    ) {
        self.proxyProtocol = proxyProtocol
        self.maximumConnectionsPerSource = maximumConnectionsPerSource
        self.eventLoopThreads = eventLoopThreads
        self.listen = listen
        self.tls = tls
        self.allowInsecurePlainHTTP = allowInsecurePlainHTTP
        self.idleTimeout = idleTimeout
        self.shutdownGracePeriod = shutdownGracePeriod
        self.maximumConnections = maximumConnections
    }
}

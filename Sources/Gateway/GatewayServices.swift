public import AsyncHTTPClient
public import Identity
public import Policy

/// Everything the MCP endpoint needs to decide and forward: shared by all connections, safe across threads.
public struct GatewayServices: Sendable {
    /// Authenticates callers (replaceable on SIGHUP).
    public let identity: AuthenticatorStore
    /// The authenticator in force.
    public var authenticator: Authenticator { identity.authenticator }
    /// Decides calls.
    public let policy: PolicyEngine
    /// Records decisions.
    public let audit: AuditLog
    /// Upstream per tenant.
    public let upstreams: [String: UpstreamConfiguration]
    /// The upstream HTTP client.
    public let httpClient: HTTPClient
    /// Session → principal bindings.
    public let sessions: SessionBindings
    /// Per-request bounds.
    public let limits: GatewayLimits
    /// The path of the MCP endpoint (default `/mcp`).
    public let mcpPath: String
    /// Seconds on a monotonic clock, for rate limiting (injectable for tests).
    private let clock: @Sendable () -> Double

    /// Services from their parts.
    public init(
        authenticator: Authenticator, policy: PolicyEngine, audit: AuditLog, upstreams: [String: UpstreamConfiguration],
        httpClient: HTTPClient, sessions: SessionBindings = SessionBindings(), limits: GatewayLimits = GatewayLimits(),
        mcpPath: String = "/mcp", clock: (@Sendable () -> Double)? = nil
    ) {
        self.identity = AuthenticatorStore(authenticator)
        self.policy = policy
        self.audit = audit
        self.upstreams = upstreams
        self.httpClient = httpClient
        self.sessions = sessions
        self.limits = limits
        self.mcpPath = mcpPath
        let origin = ContinuousClock.now
        self.clock = clock ?? {
            let elapsed = origin.duration(to: .now).components
            return Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        }
    }

    /// Seconds on a monotonic clock, for rate limiting.
    var monotonicSeconds: Double { clock() }

    /// An HTTP client for upstreams: no read timeout (SSE streams may be quiet), a bounded connect timeout.
    public static func makeHTTPClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: nil)
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        // The default (8 connections per upstream host) makes concurrent callers queue behind each other.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

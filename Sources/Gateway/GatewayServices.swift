public import Identity
public import Logging
import NIOCore
import NIOPosix
public import Policy
import Synchronization

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
    /// The upstream client: tenants' upstreams, per-event-loop pools, budgets.
    public let upstream: UpstreamClient
    /// Sealed session handles and event ids (no session table: any process with the keys opens them).
    public let sessionHandles: SessionHandles
    /// Per-request bounds.
    public let limits: GatewayLimits
    /// The path of the MCP endpoint (default `/mcp`).
    public let mcpPath: String
    /// What the gateway publishes as an OAuth protected resource (RFC 9728), if configured.
    public var oauth: OAuthResources?
    /// Fetches tenants' signing keys over HTTPS, if any tenant has them there.
    public var keyFetcher: RemoteKeyFetcher?
    /// Prometheus metrics, counted from the audit records and read at scrape time.
    public let metrics: GatewayMetrics
    /// Holds back repeated log lines about one failing thing (an unreachable upstream).
    let operationalLogThrottle = LogThrottle()
    /// The log of what operators must see (upstream failures), rate-limited per cause.
    let logger: Logger
    /// Checks opaque bearer tokens with tenants' authorization servers, if any tenant has introspection.
    public var introspector: TokenIntrospector?
    /// Rate limits shared across replicas through Redis, if configured.
    public var sharedLimits: SharedLimiter?
    /// Request ids.
    let requestIDs = RequestIDs()
    /// Legacy HTTP+SSE streams open here, so refusals of their messages can be answered on them.
    let legacyStreams = LegacyStreams()
    /// The `Mcp-Param-*` headers tenants' tools mirror, learned from `tools/list` results.
    public let toolHeaders = ToolHeaderSchemas()
    /// Work taken off the event loops at once (fresh signature checks, large decisions).
    private let offloaded = OffloadCounter()
    /// Seconds on a monotonic clock, for rate limiting (injectable for tests).
    private let clock: @Sendable () -> Double

    /// Services from their parts. Fails when an upstream URL or its TLS settings are invalid.
    public init(
        authenticator: Authenticator, policy: PolicyEngine, audit: AuditLog, upstreams: [String: UpstreamConfiguration],
        sessionHandles: SessionHandles = .singleProcess(), limits: GatewayLimits = GatewayLimits(), mcpPath: String = "/mcp",
        clock: (@Sendable () -> Double)? = nil, logger: Logger = Logger(label: "mcpgw")
    ) throws(UpstreamConfigurationError) {
        self.identity = AuthenticatorStore(authenticator)
        self.policy = policy
        self.audit = audit
        self.upstream = try UpstreamClient(upstreams: upstreams, limits: limits, logger: logger)
        self.sessionHandles = sessionHandles
        self.limits = limits
        self.mcpPath = mcpPath
        self.metrics = GatewayMetrics(policy: policy.snapshot)
        self.logger = logger
        let origin = NIODeadline.now()
        self.clock = clock ?? { Double((NIODeadline.now() - origin).nanoseconds) / 1e9 }
    }

    /// Seconds on a monotonic clock, for rate limiting.
    var monotonicSeconds: Double { clock() }

    /// Shares rate limits across replicas through the Redis server of `settings` (on this services' clock).
    public mutating func shareRateLimits(_ settings: SharedLimitSettings) {
        sharedLimits = SharedLimiter(settings: settings, clock: clock, logger: logger)
    }

    /// Most pieces of work off the loops at once; beyond, requests are refused (503) rather than queued unboundedly.
    static let maximumOffloaded = 512

    /// Runs `work` on the shared thread pool; its result comes back on `eventLoop`.
    func offload<Value: Sendable>(on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> Value) -> EventLoopFuture<Value> {
        guard offloaded.enter(limit: Self.maximumOffloaded) else {
            return eventLoop.makeFailedFuture(OffloadRefused())
        }
        let counter = offloaded
        let result = NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop, work)
        // Given back however it ends, also when the pool refuses the work.
        result.whenComplete { _ in counter.leave() }
        return result
    }
}

/// Too much work is waiting off the event loops.
struct OffloadRefused: Error {}

/// Counts work in flight on the thread pool.
final class OffloadCounter: Sendable {
    private let count = Atomic<Int>(0)

    func enter(limit: Int) -> Bool {
        if count.wrappingAdd(1, ordering: .relaxed).newValue > limit {
            count.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func leave() { count.wrappingSubtract(1, ordering: .relaxed) }
}

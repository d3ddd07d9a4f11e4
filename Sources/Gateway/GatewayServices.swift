public import Identity
public import Logging
import NIOCore
import NIOPosix
public import Policy
import Synchronization

/// Everything the MCP endpoint needs to decide and forward: shared by all connections, safe across threads.
///
/// Every connection handler and decision holds a copy, so the parts that never change after start-up live in one
/// shared, immutable box, and the few members set while the gateway is assembled (`oauth`, `keyFetcher`,
/// `introspector`, `sharedLimits`) in a second one, replaced whole when one of them is set: a copy costs two
/// reference counts instead of one per member.
public struct GatewayServices: Sendable {
    /// The members fixed at start-up.
    private final class Parts: Sendable {
        let identity: AuthenticatorStore
        let policy: PolicyEngine
        let audit: AuditLog
        let upstream: UpstreamClient
        let sessionHandles: SessionHandles
        let limits: GatewayLimits
        let mcpPath: String
        let metrics: GatewayMetrics
        let operationalLogThrottle = LogThrottle()
        let logger: Logger
        let requestIDs = RequestIDs()
        let legacyStreams = LegacyStreams()
        let toolHeaders = ToolHeaderSchemas()
        let offloaded = OffloadCounter()
        let costlyTenants = CostlyTenants()
        let costlyListTenants = CostlyTenants()
        let receivingBodies: HeldBytes
        let clock: @Sendable () -> Double

        init(
            identity: AuthenticatorStore, policy: PolicyEngine, audit: AuditLog, upstream: UpstreamClient,
            sessionHandles: SessionHandles, limits: GatewayLimits, mcpPath: String, metrics: GatewayMetrics, logger: Logger,
            clock: @escaping @Sendable () -> Double
        ) {
            self.identity = identity
            self.policy = policy
            self.audit = audit
            self.upstream = upstream
            self.sessionHandles = sessionHandles
            self.limits = limits
            self.mcpPath = mcpPath
            self.metrics = metrics
            self.logger = logger
            self.clock = clock
            self.receivingBodies = HeldBytes(
                maximumPerTenant: limits.maximumReceivingBodyBytesPerTenant, maximumTotal: limits.maximumReceivingBodyBytes)
        }
    }

    /// The members set while the gateway is assembled.
    private final class Assembled: Sendable {
        let oauth: OAuthResources?
        let keyFetcher: RemoteKeyFetcher?
        let introspector: TokenIntrospector?
        let sharedLimits: SharedLimiter?

        init(
            oauth: OAuthResources? = nil, keyFetcher: RemoteKeyFetcher? = nil, introspector: TokenIntrospector? = nil,
            sharedLimits: SharedLimiter? = nil
        ) {
            self.oauth = oauth
            self.keyFetcher = keyFetcher
            self.introspector = introspector
            self.sharedLimits = sharedLimits
        }
    }

    private let storage: Parts
    private var assembled = Assembled()

    /// Authenticates callers (replaceable on SIGHUP).
    public var identity: AuthenticatorStore { storage.identity }
    /// The authenticator in force.
    public var authenticator: Authenticator { identity.authenticator }
    /// Decides calls.
    public var policy: PolicyEngine { storage.policy }
    /// Records decisions.
    public var audit: AuditLog { storage.audit }
    /// The upstream client: tenants' upstreams, per-event-loop pools, budgets.
    public var upstream: UpstreamClient { storage.upstream }
    /// Sealed session handles and event ids (no session table: any process with the keys opens them).
    public var sessionHandles: SessionHandles { storage.sessionHandles }
    /// Per-request bounds.
    public var limits: GatewayLimits { storage.limits }
    /// The path of the MCP endpoint (default `/mcp`).
    public var mcpPath: String { storage.mcpPath }
    /// What the gateway publishes as an OAuth protected resource (RFC 9728), if configured.
    public var oauth: OAuthResources? {
        get { assembled.oauth }
        set {
            assembled = Assembled(
                oauth: newValue, keyFetcher: keyFetcher, introspector: introspector, sharedLimits: sharedLimits)
        }
    }
    /// Fetches tenants' signing keys over HTTPS, if any tenant has them there.
    public var keyFetcher: RemoteKeyFetcher? {
        get { assembled.keyFetcher }
        set {
            assembled = Assembled(oauth: oauth, keyFetcher: newValue, introspector: introspector, sharedLimits: sharedLimits)
        }
    }
    /// Prometheus metrics, counted from the audit records and read at scrape time.
    public var metrics: GatewayMetrics { storage.metrics }
    /// Holds back repeated log lines about one failing thing (an unreachable upstream).
    var operationalLogThrottle: LogThrottle { storage.operationalLogThrottle }
    /// The log of what operators must see (upstream failures), rate-limited per cause.
    var logger: Logger { storage.logger }
    /// Checks opaque bearer tokens with tenants' authorization servers, if any tenant has introspection.
    public var introspector: TokenIntrospector? {
        get { assembled.introspector }
        set {
            assembled = Assembled(oauth: oauth, keyFetcher: keyFetcher, introspector: newValue, sharedLimits: sharedLimits)
        }
    }
    /// Rate limits shared across replicas through Redis, if configured.
    public var sharedLimits: SharedLimiter? {
        get { assembled.sharedLimits }
        set {
            assembled = Assembled(oauth: oauth, keyFetcher: keyFetcher, introspector: introspector, sharedLimits: newValue)
        }
    }
    /// Request ids.
    var requestIDs: RequestIDs { storage.requestIDs }
    /// Legacy HTTP+SSE streams open here, so refusals of their messages can be answered on them.
    var legacyStreams: LegacyStreams { storage.legacyStreams }
    /// The `Mcp-Param-*` headers tenants' tools mirror, learned from `tools/list` results.
    public var toolHeaders: ToolHeaderSchemas { storage.toolHeaders }
    /// Work taken off the event loops at once (fresh signature checks, large decisions).
    /// Work off the loops in flight, in all and per source.
    var offloaded: OffloadCounter { storage.offloaded }
    /// Tenants whose decisions recently took long on a loop (their mid-sized calls are decided off the loops).
    var costlyTenants: CostlyTenants { storage.costlyTenants }
    /// Tenants whose list answers recently took long to filter on a loop (their mid-sized ones are filtered off the
    /// loops).
    var costlyListTenants: CostlyTenants { storage.costlyListTenants }
    /// Request bodies being received, beyond the first `GatewayLimits.unchargedBodyBytes` of each, per tenant and in all.
    var receivingBodies: HeldBytes { storage.receivingBodies }
    /// Seconds on a monotonic clock, for rate limiting (injectable for tests).
    private var clock: @Sendable () -> Double { storage.clock }

    /// Services from their parts. Fails when an upstream URL or its TLS settings are invalid.
    public init(
        authenticator: Authenticator, policy: PolicyEngine, audit: AuditLog, upstreams: [String: UpstreamConfiguration],
        sessionHandles: SessionHandles = .singleProcess(), limits: GatewayLimits = GatewayLimits(), mcpPath: String = "/mcp",
        clock: (@Sendable () -> Double)? = nil, logger: Logger = Logger(label: "mcpgw")
    ) throws(UpstreamConfigurationError) {
        let origin = NIODeadline.now()
        storage = Parts(
            identity: AuthenticatorStore(authenticator), policy: policy, audit: audit,
            upstream: try UpstreamClient(upstreams: upstreams, limits: limits, logger: logger), sessionHandles: sessionHandles,
            limits: limits, mcpPath: mcpPath, metrics: GatewayMetrics(policy: policy.snapshot), logger: logger,
            clock: clock ?? { Double((NIODeadline.now() - origin).nanoseconds) / 1e9 })
    }

    /// Seconds on a monotonic clock, for rate limiting.
    var monotonicSeconds: Double { clock() }

    /// Shares rate limits across replicas through the Redis server of `settings` (on this services' clock).
    public mutating func shareRateLimits(_ settings: SharedLimitSettings) {
        sharedLimits = SharedLimiter(settings: settings, clock: clock, logger: logger)
    }

    /// Most pieces of work off the loops at once; beyond, requests are refused (503) rather than queued unboundedly.
    static let maximumOffloaded = 512
    /// Most pieces of work off the loops at once for clients of one source (`ClientSource`): an eighth of all, so that
    /// one source sending tokens with made-up signatures (each a fresh signature check) cannot fill the queue every
    /// tenant's fresh credentials wait in.
    static let maximumOffloadedPerSource = maximumOffloaded / 8

    /// Runs `work` on the shared thread pool, for a client of `source`; its result comes back on `eventLoop`.
    func offload<Value: Sendable>(
        on eventLoop: any EventLoop, source: String, _ work: @escaping @Sendable () -> Value
    ) -> EventLoopFuture<Value> {
        guard offloaded.enter(source: source, limit: Self.maximumOffloaded, perSource: Self.maximumOffloadedPerSource) else {
            return eventLoop.makeFailedFuture(OffloadRefused())
        }
        let counter = offloaded
        let result = NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop, work)
        // Given back however it ends, also when the pool refuses the work.
        result.whenComplete { _ in counter.leave(source: source) }
        return result
    }
}

/// Too much work is waiting off the event loops.
struct OffloadRefused: Error {}

/// Counts work in flight on the thread pool, in all and per client source.
final class OffloadCounter: Sendable {
    private let counts = Mutex<(total: Int, perSource: [String: Int])>((0, [:]))

    /// Counts one more piece of work of `source`, unless the total would pass `limit` or the source's `perSource`.
    func enter(source: String, limit: Int, perSource: Int) -> Bool {
        counts.withLock { counts in
            let held = counts.perSource[source, default: 0]
            guard counts.total < limit, held < perSource else { return false }
            counts.total += 1
            counts.perSource[source] = held + 1
            return true
        }
    }

    /// Gives back a piece of work of `source`.
    func leave(source: String) {
        counts.withLock { counts in
            counts.total -= 1
            let held = counts.perSource[source, default: 1] - 1
            counts.perSource[source] = held > 0 ? held : nil
        }
    }

    /// Pieces of work in flight for `source`.
    func inFlight(source: String) -> Int { counts.withLock { $0.perSource[source, default: 0] } }
}

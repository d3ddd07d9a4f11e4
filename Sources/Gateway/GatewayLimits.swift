import Policy

/// Bounds on what one request, one tenant and one agent may cost. Every field has a production default.
public struct GatewayLimits: Sendable, Hashable {
    /// Largest request body, in bytes (413 beyond).
    public var maximumBodyBytes: Int = 4 * 1024 * 1024
    /// Deepest JSON nesting in a request body.
    public var maximumJSONDepth: Int = 64
    /// Most messages in one JSON-RPC batch (413 beyond): each message gets its own decision and audit record, so a
    /// batch of many tiny messages would cost the log many times its size.
    public var maximumBatchMessages: Int = 64
    /// How long the upstream may take to send its response head (504 beyond).
    public var upstreamTimeout: Duration = .seconds(30)
    /// How long connecting to an upstream (TCP and TLS) may take (502 beyond).
    public var upstreamConnectTimeout: Duration = .seconds(5)
    /// A response stream with no bytes from the upstream for this long is ended (the client's connection closes).
    public var upstreamIdleStreamTimeout: Duration = .seconds(300)
    /// Largest list response the gateway buffers to filter (larger ones are refused with 502).
    public var maximumFilteredResponseBytes: Int = 16 * 1024 * 1024
    /// Bytes one tenant's answers held whole may take at once (collected lists and task answers, SSE events being
    /// assembled, collected answers not yet read by their client); `503` beyond.
    public var maximumHeldResponseBytesPerTenant: Int = 64 * 1024 * 1024
    /// Bytes all tenants' answers held whole may take at once; `503` beyond.
    public var maximumHeldResponseBytes: Int = 512 * 1024 * 1024
    /// Bytes of request bodies one tenant's callers may have on their way in at once (the first `unchargedBodyBytes`
    /// of each body not counted); a body beyond gets `503` and its connection is closed.
    public var maximumReceivingBodyBytesPerTenant: Int = 64 * 1024 * 1024
    /// The same, for all tenants together.
    public var maximumReceivingBodyBytes: Int = 256 * 1024 * 1024
    /// The first bytes of each request body, not counted against `maximumReceivingBodyBytes`: nearly every body is
    /// smaller and whole in one read, and never touches the shared count (the number of connections bounds these).
    public static let unchargedBodyBytes = 64 * 1024
    /// Upstream connections open at once to one upstream (`scheme://host:port`), over all event loops.
    public var maximumUpstreamConnections: Int = 512
    /// Requests one tenant may have in flight upstream at once (503 beyond).
    public var maximumRequestsPerTenant: Int = 256
    /// Requests one agent may have in flight upstream at once (503 beyond); nil: half of `maximumRequestsPerTenant`,
    /// so that one agent (slow readers, a hanging tool) never holds all of its tenant's.
    public var maximumRequestsPerAgent: Int?
    /// `maximumRequestsPerAgent`, or its default.
    public var requestsPerAgent: Int { maximumRequestsPerAgent ?? max(1, maximumRequestsPerTenant / 2) }
    /// Listening streams (GET streams, `subscriptions/listen`) one tenant may hold open at once (429 beyond).
    public var maximumStreamsPerTenant: Int = 64
    /// Listening streams (GET streams, `subscriptions/listen`) one agent may hold open at once (429 beyond).
    public var maximumStreamsPerAgent: Int = 8
    /// The whole request head must arrive within this time from its first byte (408 and close beyond).
    public var requestHeadTimeout: Duration = .seconds(10)
    /// A body arriving slower than this over any window of `bodyRateGracePeriod`, after its first, is cut (408 and
    /// close).
    public var minimumBodyBytesPerSecond: Int = 1024
    /// A client that has fallen behind (its socket full) must take its answers at least this fast over each
    /// `answerRateWindow` it spends behind; slower, the exchange is ended (recorded `slow_reader`) and the connection
    /// closed.
    public var minimumAnswerBytesPerSecond: Int = 1024
    /// The window over which a client that has fallen behind is held to `minimumAnswerBytesPerSecond`.
    public var answerRateWindow: Duration = .seconds(30)
    /// How long a body may take before its rate is checked.
    public var bodyRateGracePeriod: Duration = .seconds(5)
    /// Body bytes read while a fresh credential is still being verified; reading pauses beyond this.
    public var preAuthenticationBodyBytes: Int = 64 * 1024
    /// Requests bodies at least this large are decided off the event loop (so they never delay other requests).
    public var offloadDecisionBytes: Int = 64 * 1024
    /// JSON list answers at least this large are filtered off the event loop (a multi-megabyte catalogue asked for over
    /// and over would hold the loop). Smaller ones, the common case, stay on the loop: the decision threads run at the
    /// lowest priority, and a busy gateway would leave ordinary lists waiting there.
    public var offloadListBytes: Int = 1 << 20
    /// Large list answers (see `offloadListBytes`) one tenant may have waiting for or in filtering at once; beyond,
    /// `503`. Generous: each holds its bytes in the tenant's share of held bytes, which is the real bound.
    public var maximumLargeListsPerTenant: Int = 64
    /// Large decisions (see `offloadDecisionBytes`) one tenant may have waiting or running at once; beyond, `429`.
    public var maximumLargeDecisionsPerTenant: Int = 4
    /// A decision on an event loop that takes longer than this marks its tenant as costly (`CostlyTenants`): for a
    /// minute, the tenant's bodies from `costlyDecisionOffloadBytes` up are decided off the loops. Filtering a list
    /// answer (or SSE events) on a loop for longer marks the tenant's lists alike: for a minute, its list answers and
    /// events that must be read are filtered off the loops from that size up.
    public var costlyDecision: Duration = .milliseconds(5)
    /// From this size, a costly tenant's bodies are decided off the loops (at most `maximumCostlyDecisionsPerTenant`
    /// of them waiting or running at once; `429` beyond), and its list answers filtered off the loops when its lists
    /// are costly (at most `maximumLargeListsPerTenant` waiting in a queue of their own; beyond, filtered on the loop).
    public var costlyDecisionOffloadBytes: Int = 4 * 1024
    /// Decisions of a costly tenant's mid-sized bodies one tenant may have waiting or running off the loops at once.
    public var maximumCostlyDecisionsPerTenant: Int = 64
    /// Local rate-limit buckets one tenant may hold (idle ones are forgotten; beyond, its new keys share an overflow
    /// bucket per limit). Per tenant, so one tenant's agents never crowd out another's.
    public var maximumRateLimitBucketsPerTenant: Int = RateLimiter.defaultBucketsPerTenant

    /// Limits with production defaults (4 MiB bodies, depth 64, 30 s upstream head timeout, 16 MiB lists, …).
    public init(
        maximumBodyBytes: Int = 4 * 1024 * 1024, maximumJSONDepth: Int = 64, upstreamTimeout: Duration = .seconds(30),
        maximumFilteredResponseBytes: Int = 16 * 1024 * 1024
    ) {
        self.maximumBodyBytes = maximumBodyBytes
        self.maximumJSONDepth = maximumJSONDepth
        self.upstreamTimeout = upstreamTimeout
        self.maximumFilteredResponseBytes = maximumFilteredResponseBytes
    }
}

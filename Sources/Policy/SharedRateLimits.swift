/// One bucket of a limit kept in a shared store: which bucket (the same key a local bucket would have) and the
/// limit's rate and burst, which the store applies.
public struct SharedBucket: Sendable, Hashable {
    /// The tenant.
    public let tenant: String
    /// The limit.
    public let limit: RateLimitRule
    /// The calling agent.
    public let agent: String
    /// The called tool ("" for methods without one).
    public let tool: String
    /// The agent the bucket is kept for ("" when the limit is not per agent). An overflowed bucket keeps its own key's
    /// parts: the store charges that key when some replica keeps it, and the overflow bucket only when none does.
    public let keyAgent: String
    /// The tool the bucket is kept for ("" when the limit is not per tool).
    public let keyTool: String
    /// For a key counted in an overflow bucket (`SharedRateLimits.placed`): the agent part of that bucket's key (the
    /// calling agent's, or "" for the tenant's); nil for a key counted as itself.
    public let overflowAgent: String?

    /// Whether the key is counted in an overflow bucket, which its agent's (or tenant's) new keys share once it holds
    /// its share of the store's buckets, unless the store already keeps the key itself.
    public var isOverflow: Bool { overflowAgent != nil }

    /// The bucket of `limit` that counts a call by `agent` of `tool` (keyed as the limit's `per` says).
    public init(tenant: String, limit: RateLimitRule, agent: String, tool: String) {
        self.tenant = tenant
        self.limit = limit
        self.agent = agent
        self.tool = tool
        overflowAgent = nil
        switch limit.scope {
        case .tenant: (keyAgent, keyTool) = ("", "")
        case .agent: (keyAgent, keyTool) = (agent, "")
        case .tool: (keyAgent, keyTool) = ("", tool)
        case .agentTool: (keyAgent, keyTool) = (agent, tool)
        }
    }

    /// This key counted in the calling agent's overflow bucket of the limit.
    public var overflow: SharedBucket { SharedBucket(overflowOf: self, agent: agent) }

    /// This key counted in the whole tenant's overflow bucket of the limit, which the tenant's new keys share once it
    /// holds its share of the store's buckets (its key names no agent: agent ids are never empty).
    public var tenantOverflow: SharedBucket { SharedBucket(overflowOf: self, agent: "") }

    private init(overflowOf bucket: SharedBucket, agent overflowAgent: String) {
        (tenant, limit, agent, tool) = (bucket.tenant, bucket.limit, bucket.agent, bucket.tool)
        (keyAgent, keyTool, self.overflowAgent) = (bucket.keyAgent, bucket.keyTool, overflowAgent)
    }
}

/// The tokens one `SharedRateLimits.take` drew, kept so that `giveBack(_:now:)` returns each to where it came from.
public struct SharedTokens: Sendable, Hashable {
    /// The buckets a token was taken from out of this replica's leases of the store.
    public let leased: [SharedBucket]
    /// The tokens taken from this replica's local shares, standing in for buckets of the store while it (or the
    /// bucket's key) was out of reach.
    public let local: RateLimiter.TakenTokens

    /// Tokens from `leased` and `local`.
    public init(leased: [SharedBucket], local: RateLimiter.TakenTokens = .none) {
        self.leased = leased
        self.local = local
    }

    /// Whether local shares stood in for the store for some bucket.
    public var usedLocalShares: Bool { !local.isEmpty }
}

/// What a shared store says to taking one token from each of some buckets.
public enum SharedTake: Sendable, Hashable {
    /// Taken from every bucket: from the store's leases, or (the store out of reach) from local shares.
    case taken(SharedTokens)
    /// Not taken: the bucket at `index` is empty for `retryAfter` seconds (nothing was taken from any bucket).
    case refused(index: Int, retryAfter: Double, fallback: Bool)
    /// Not known without asking the store: these buckets have nothing on hand here. Nothing was taken; ask the
    /// store (asynchronously) and decide again.
    case mustAsk([SharedBucket])
    /// The store is out of reach and the tenant fails closed. Nothing was taken.
    case unavailable

    /// For `taken`: whether local shares stood in for the store (nil for every other answer).
    public var takenFromLocalShares: Bool? {
        guard case .taken(let tokens) = self else { return nil }
        return tokens.usedLocalShares
    }
}

/// Rate-limit buckets shared by every replica of the gateway, consulted without blocking: what is on hand is
/// answered at once, and what is not is fetched asynchronously by the caller (`mustAsk`) before deciding again.
public protocol SharedRateLimits: Sendable {
    /// Whether `limit` is kept in the shared store (otherwise this replica's own limiter counts it).
    func isShared(_ limit: RateLimitRule) -> Bool
    /// Takes a token from each of `buckets` (all of one tenant), or from none.
    func take(_ buckets: [SharedBucket], now: Double) -> SharedTake
    /// Gives back the tokens `take` drew for a call that was not let through after all, each to where it came from.
    func giveBack(_ tokens: SharedTokens, now: Double)
    /// The buckets a call counts in: `buckets`, except that an agent holding its share of the store's buckets counts
    /// its new keys in its overflow bucket (`SharedBucket.overflow`), and a tenant holding its share counts them in
    /// the tenant's (`SharedBucket.tenantOverflow`), so that inventing tool or agent names neither grows the store
    /// without bound nor takes room from others.
    func placed(_ buckets: [SharedBucket]) -> [SharedBucket]
}

extension SharedRateLimits {
    /// Every bucket as it is.
    public func placed(_ buckets: [SharedBucket]) -> [SharedBucket] { buckets }
}

/// The tokens one decision attempt took, so that an attempt that cannot finish yet (a shared bucket must be asked
/// for first) gives them all back before it is tried again: a batch's earlier calls are not counted twice.
public final class RateLimitLedger {
    private var local: [RateLimiter.TakenTokens] = []
    private var shared: [SharedTokens] = []

    /// An empty ledger.
    public init() {}

    func recordLocal(_ taken: RateLimiter.TakenTokens) {
        if !taken.isEmpty { local.append(taken) }
    }

    func recordShared(_ tokens: SharedTokens) {
        if !tokens.leased.isEmpty || tokens.usedLocalShares { shared.append(tokens) }
    }

    /// The shared buckets recorded as taken from the store's leases (one entry per token; not those charged to local
    /// shares while the store or a bucket's key was out of reach).
    public var sharedBuckets: [SharedBucket] { shared.flatMap(\.leased) }

    /// Gives every recorded token back, to `limiter` and `store`.
    public func giveBack(limiter: RateLimiter, store: (any SharedRateLimits)?, now: Double) {
        for taken in local { limiter.giveBack(taken, now: now) }
        for tokens in shared { store?.giveBack(tokens, now: now) }
        local.removeAll()
        shared.removeAll()
    }
}

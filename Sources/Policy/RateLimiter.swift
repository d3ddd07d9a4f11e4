import Synchronization

/// Token-bucket rate limiting for every tenant, exact under concurrent use and bounded in memory.
///
/// Buckets are kept per (tenant, limit, agent and/or tool) as each limit's `per` says. A call that several limits
/// count takes a token from each of them or from none (all-or-nothing, under one lock per tenant shard).
///
/// Memory: at most `maximumBucketsPerTenant` buckets for each tenant (plus a few overflow buckets per limit), so one
/// tenant's keys never take room from another's. When a tenant is at its cap, buckets that have refilled completely
/// are forgotten first — a full bucket is indistinguishable from a new one, so this never loosens a limit. If the
/// tenant is still at its cap, its new keys share one overflow bucket per limit: inventing agent names then yields
/// one extra bucket's worth of calls in total, not one per name, and only that tenant's new keys are affected.
///
/// Within a tenant, one agent's calls make at most a quarter of its cap of buckets (`agentShare`); beyond, that
/// agent's new keys share an overflow bucket of its own per limit. So an agent inventing tool names fills neither the
/// tenant's table nor an overflow bucket its siblings use. (At most four agents can reach their share, so these
/// overflow buckets stay few.)
public final class RateLimiter: Sendable {
    struct BucketKey: Hashable, Sendable {
        let tenant: String
        let limit: String
        let agent: String
        let tool: String
        /// An overflow bucket (of the tenant, or of `agent`): never the key of a real agent or tool, whatever they are
        /// called.
        var overflow = false
    }

    /// A bucket with the rate and burst it refills by, so that a sweep can tell exactly whether it is full, and the
    /// agent whose call made it (whose share it counts in).
    struct Entry: Sendable {
        var bucket: TokenBucket
        let rate: Double
        let burst: Double
        let owner: String

        /// A full bucket for `limit`, made by a call of `owner`.
        static func fresh(_ limit: RateLimitRule, owner: String, now: Double) -> Entry {
            Entry(bucket: TokenBucket(burst: limit.burst, now: now), rate: limit.ratePerSecond, burst: limit.burst, owner: owner)
        }
    }

    /// One tenant's buckets: counted against its own cap, and swept on their own (a tenant at its cap never makes
    /// another tenant's calls pay for a sweep).
    struct TenantBuckets: Sendable {
        var entries: [BucketKey: Entry] = [:]
        /// How many (non-overflow) buckets each agent's calls made.
        var owned: [String: Int] = [:]
        var lastSweep: Double = -.infinity

        /// Adds a full bucket for `limit` under `key`, made by a call of `owner`, unless one is there.
        mutating func addIfMissing(_ key: BucketKey, _ limit: RateLimitRule, owner: String, now: Double) {
            guard entries[key] == nil else { return }
            entries[key] = .fresh(limit, owner: owner, now: now)
            if !key.overflow { owned[owner, default: 0] += 1 }
        }
    }

    /// The tenants of one shard.
    struct Shard: Sendable {
        var tenants: [String: TenantBuckets] = [:]

        /// Runs `body` on `tenant`'s buckets, in place (one lookup; a tenant's table stays once made: tenants are
        /// few, set by the configuration).
        mutating func withTenant<Result>(_ tenant: String, _ body: (inout TenantBuckets) -> Result) -> Result {
            body(&tenants[tenant, default: TenantBuckets()])
        }
    }

    /// One lock-protected part of the bucket table (tenants are spread over shards by hash).
    final class ShardBox: Sendable {
        let state = Mutex(Shard())
    }

    private let shards: [ShardBox]
    private let bucketsPerTenant: Int

    /// How many buckets a tenant may hold by default (each keeps its agent and tool names: about 12 MB for a tenant
    /// at the cap with short names, up to about 45 MB with the longest, as measured by review).
    public static let defaultBucketsPerTenant = 20_000

    /// A limiter holding at most `maximumBucketsPerTenant` buckets for each tenant; tenants are spread over
    /// `shardCount` lock-protected shards.
    public init(maximumBucketsPerTenant: Int = RateLimiter.defaultBucketsPerTenant, shardCount: Int = 16) {
        shards = (0..<max(1, shardCount)).map { _ in ShardBox() }
        bucketsPerTenant = max(1, maximumBucketsPerTenant)
    }

    /// The buckets one successful `take` drew a token from.
    public struct TakenTokens: Sendable, Hashable {
        let tenant: String
        let keys: [BucketKey]
        /// Whether no token was taken.
        public var isEmpty: Bool { keys.isEmpty }
        /// No token.
        public static let none = TakenTokens(tenant: "", keys: [])
    }

    /// How many buckets exist now.
    public var bucketCount: Int {
        shards.reduce(0) { total, box in total + box.state.withLock { $0.tenants.values.reduce(0) { $0 + $1.entries.count } } }
    }

    /// Consults every limit of `limits` that counts this call; takes a token from each, or from none.
    /// Returns nil when the call may go on, or the refusing limit and the seconds until a retry can succeed.
    public func consume(
        tenant: String, agent: String, method: String, tool: String?, limits: [RateLimitRule], now: Double
    ) -> (limit: RateLimitRule, retryAfter: Double)? {
        let applicable = limits.filter { $0.counts(method: method, target: tool, agent: agent) }
        return consume(tenant: tenant, agent: agent, tool: tool, applicable: applicable, now: now).refusal
    }

    /// Takes a token from each of `applicable` (limits known to count the call), or from none. Returns nil when the
    /// call may go on, or the refusing limit and the seconds until a retry can succeed.
    public func consume(
        tenant: String, agent: String, tool: String?, limits applicable: [RateLimitRule], now: Double
    ) -> (limit: RateLimitRule, retryAfter: Double)? {
        consume(tenant: tenant, agent: agent, tool: tool, applicable: applicable, now: now).refusal
    }

    /// Takes a token from each of `applicable` (limits known to count the call), or from none; on success, the tokens
    /// taken, which `giveBack(_:now:)` returns to the very buckets they came from.
    public func take(
        tenant: String, agent: String, tool: String?, limits applicable: [RateLimitRule], now: Double
    ) -> (refusal: (limit: RateLimitRule, retryAfter: Double)?, taken: TakenTokens) {
        let (refusal, keys) = consume(tenant: tenant, agent: agent, tool: tool, applicable: applicable, now: now)
        return (refusal, TakenTokens(tenant: tenant, keys: keys))
    }

    func consume(
        tenant: String, agent: String, tool: String?, applicable: [RateLimitRule], now: Double
    ) -> (refusal: (limit: RateLimitRule, retryAfter: Double)?, keys: [BucketKey]) {
        guard !applicable.isEmpty else { return (nil, []) }
        let box = shards[Int(UInt(bitPattern: tenant.hashValue) % UInt(shards.count))]
        let cap = bucketsPerTenant
        return box.state.withLock { shard in
            shard.withTenant(tenant) { table -> (refusal: (limit: RateLimitRule, retryAfter: Double)?, keys: [BucketKey]) in
                // Each bucket is found by its key once (a key hashes four strings, and this runs for every call): by
                // index, which stays valid until an entry is added; when one was, the indices are looked up again.
                var keys: [BucketKey] = []
                var indices: [Dictionary<BucketKey, Entry>.Index] = []
                keys.reserveCapacity(applicable.count)
                indices.reserveCapacity(applicable.count)
                var added = false
                for limit in applicable {
                    var key = Self.key(tenant: tenant, agent: agent, tool: tool ?? "", limit: limit)
                    if let index = table.entries.index(forKey: key) {
                        indices.append(index)
                    } else {
                        key = Self.placed(key, agent: agent, in: &table, cap: cap, now: now)
                        table.addIfMissing(key, limit, owner: agent, now: now)
                        added = true
                        indices.append(table.entries.startIndex)
                    }
                    keys.append(key)
                }
                if added {
                    // A sweep for a later limit may have dropped a bucket an earlier limit of this call found or made (a
                    // full bucket is swept): it comes back full, which is what it was.
                    for (limit, key) in zip(applicable, keys) { table.addIfMissing(key, limit, owner: agent, now: now) }
                    indices = keys.map { table.entries.index(forKey: $0)! }
                }
                for (limit, index) in zip(applicable, indices) {
                    // A reloaded limit with a new rate or burst applies from now on to its existing buckets.
                    if table.entries.values[index].rate != limit.ratePerSecond || table.entries.values[index].burst != limit.burst {
                        table.entries.values[index] = Entry(
                            bucket: table.entries.values[index].bucket, rate: limit.ratePerSecond, burst: limit.burst,
                            owner: table.entries.values[index].owner)
                    }
                    let (rate, burst) = (table.entries.values[index].rate, table.entries.values[index].burst)
                    table.entries.values[index].bucket.refill(rate: rate, burst: burst, now: now)
                }
                // All-or-nothing: refuse with the longest wait among empty buckets.
                var refusal: (limit: RateLimitRule, retryAfter: Double)?
                for (limit, index) in zip(applicable, indices) where !(table.entries.values[index].bucket.hasToken) {
                    let wait = table.entries.values[index].bucket.secondsUntilToken(rate: limit.ratePerSecond)
                    if refusal == nil || wait > refusal!.retryAfter { refusal = (limit, wait) }
                }
                if refusal != nil { return (refusal, []) }
                for index in indices { table.entries.values[index].bucket.take() }
                return (nil, keys)
            }
        }
    }

    /// Puts each token of `taken` back into the bucket it came from, never above the bucket's burst. A bucket forgotten
    /// since (swept when full) needs nothing back.
    public func giveBack(_ taken: TakenTokens, now: Double) {
        guard !taken.keys.isEmpty else { return }
        let box = shards[Int(UInt(bitPattern: taken.tenant.hashValue) % UInt(shards.count))]
        box.state.withLock { shard in
            shard.withTenant(taken.tenant) { table in
                for key in taken.keys {
                    guard var entry = table.entries[key] else { continue }
                    entry.bucket.refill(rate: entry.rate, burst: entry.burst, now: now)
                    entry.bucket.giveBack(burst: entry.burst)
                    table.entries[key] = entry
                }
            }
        }
    }

    /// The most buckets one agent's calls make in a tenant's table of `cap`: a quarter of it.
    public static func agentShare(_ cap: Int) -> Int { max(1, cap / 4) }

    /// Where a new bucket for `key`, counting a call of `agent`, goes: under `key`, unless `agent` has made its share
    /// of the tenant's buckets (then its own overflow bucket for the limit) or the tenant is at its cap (then the
    /// tenant's overflow bucket for the limit). Buckets that have refilled are forgotten first.
    private static func placed(_ key: BucketKey, agent: String, in table: inout TenantBuckets, cap: Int, now: Double) -> BucketKey {
        let share = agentShare(cap)
        if table.entries.count >= cap || table.owned[agent, default: 0] >= share { sweep(&table, now: now) }
        if table.owned[agent, default: 0] >= share {
            return BucketKey(tenant: key.tenant, limit: key.limit, agent: agent, tool: "", overflow: true)
        }
        if table.entries.count >= cap {
            return BucketKey(tenant: key.tenant, limit: key.limit, agent: "", tool: "", overflow: true)
        }
        return key
    }

    /// Forgets buckets that have refilled completely (lossless: a full bucket equals a new one). O(buckets), so
    /// it runs at most once per second per shard; new keys cannot make every call pay for a sweep.
    private static func sweep(_ buckets: inout TenantBuckets, now: Double) {
        guard now - buckets.lastSweep >= 1 else { return }
        buckets.lastSweep = now
        buckets.entries = buckets.entries.filter { _, entry in
            var refilled = entry.bucket
            refilled.refill(rate: entry.rate, burst: entry.burst, now: now)
            return !refilled.isFull(burst: entry.burst)
        }
        buckets.owned = [:]
        for (key, entry) in buckets.entries where !key.overflow { buckets.owned[entry.owner, default: 0] += 1 }
    }

    static func key(tenant: String, agent: String, tool: String, limit: RateLimitRule) -> BucketKey {
        switch limit.scope {
        case .tenant: BucketKey(tenant: tenant, limit: limit.id, agent: "", tool: "")
        case .agent: BucketKey(tenant: tenant, limit: limit.id, agent: agent, tool: "")
        case .tool: BucketKey(tenant: tenant, limit: limit.id, agent: "", tool: tool)
        case .agentTool: BucketKey(tenant: tenant, limit: limit.id, agent: agent, tool: tool)
        }
    }
}

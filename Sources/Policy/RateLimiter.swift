import Synchronization

/// Token-bucket rate limiting for every tenant, exact under concurrent use and bounded in memory.
///
/// Buckets are kept per (tenant, limit, agent and/or tool) as each limit's `per` says. A call that several limits
/// count takes a token from each of them or from none (all-or-nothing, under one lock per tenant shard).
///
/// Memory: at most `maximumBucketsPerTenant` buckets for each tenant (plus one overflow bucket per limit), so one
/// tenant's keys never take room from another's. When a tenant is at its cap, buckets that have refilled completely
/// are forgotten first — a full bucket is indistinguishable from a new one, so this never loosens a limit. If the
/// tenant is still at its cap, its new keys share one overflow bucket per limit: inventing agent names then yields
/// one extra bucket's worth of calls in total, not one per name, and only that tenant's new keys are affected.
public final class RateLimiter: Sendable {
    struct BucketKey: Hashable, Sendable {
        let tenant: String
        let limit: String
        let agent: String
        let tool: String
    }

    /// A bucket with the rate and burst it refills by, so that a sweep can tell exactly whether it is full.
    struct Entry: Sendable {
        var bucket: TokenBucket
        let rate: Double
        let burst: Double

        /// A full bucket for `limit`.
        static func fresh(_ limit: RateLimitRule, now: Double) -> Entry {
            Entry(bucket: TokenBucket(burst: limit.burst, now: now), rate: limit.ratePerSecond, burst: limit.burst)
        }
    }

    /// One tenant's buckets: counted against its own cap, and swept on their own (a tenant at its cap never makes
    /// another tenant's calls pay for a sweep).
    struct TenantBuckets: Sendable {
        var entries: [BucketKey: Entry] = [:]
        var lastSweep: Double = -.infinity

        /// Adds a full bucket for `limit` under `key` unless one is there.
        mutating func addIfMissing(_ key: BucketKey, _ limit: RateLimitRule, now: Double) {
            if entries[key] == nil { entries[key] = .fresh(limit, now: now) }
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
    /// Key used for the shared overflow bucket of a limit.
    static let overflowKey = "\u{0}overflow"

    /// How many buckets a tenant may hold by default (about 4 MiB of keys and counts).
    public static let defaultBucketsPerTenant = 20_000

    /// A limiter holding at most `maximumBucketsPerTenant` buckets for each tenant; tenants are spread over
    /// `shardCount` lock-protected shards.
    public init(maximumBucketsPerTenant: Int = RateLimiter.defaultBucketsPerTenant, shardCount: Int = 16) {
        shards = (0..<max(1, shardCount)).map { _ in ShardBox() }
        bucketsPerTenant = max(1, maximumBucketsPerTenant)
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

    /// Takes a token from each of `applicable` (limits known to count the call), or from none; on success, the keys
    /// of the buckets the tokens came from.
    public func consume(
        tenant: String, agent: String, tool: String?, limits applicable: [RateLimitRule], now: Double
    ) -> (limit: RateLimitRule, retryAfter: Double)? {
        consume(tenant: tenant, agent: agent, tool: tool, applicable: applicable, now: now).refusal
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
                        if table.entries.count >= cap {
                            Self.sweep(&table, now: now)
                            if table.entries.count >= cap {
                                key = BucketKey(tenant: tenant, limit: limit.id, agent: Self.overflowKey, tool: Self.overflowKey)
                            }
                        }
                        table.addIfMissing(key, limit, now: now)
                        added = true
                        indices.append(table.entries.startIndex)
                    }
                    keys.append(key)
                }
                if added {
                    // A sweep for a later limit may have dropped a bucket an earlier limit of this call found or made (a
                    // full bucket is swept): it comes back full, which is what it was.
                    for (limit, key) in zip(applicable, keys) { table.addIfMissing(key, limit, now: now) }
                    indices = keys.map { table.entries.index(forKey: $0)! }
                }
                for (limit, index) in zip(applicable, indices) {
                    // A reloaded limit with a new rate or burst applies from now on to its existing buckets.
                    if table.entries.values[index].rate != limit.ratePerSecond || table.entries.values[index].burst != limit.burst {
                        table.entries.values[index] = Entry(
                            bucket: table.entries.values[index].bucket, rate: limit.ratePerSecond, burst: limit.burst)
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

    /// Puts back one token into each bucket of `limits` that counted a call by `agent` of `tool` (taken by
    /// `consume` for a call that did not go through after all), never above a limit's burst.
    public func giveBack(tenant: String, agent: String, tool: String?, limits: [RateLimitRule], now: Double) {
        let box = shards[Int(UInt(bitPattern: tenant.hashValue) % UInt(shards.count))]
        box.state.withLock { shard in
            shard.withTenant(tenant) { table in
                for limit in limits {
                    var key = Self.key(tenant: tenant, agent: agent, tool: tool ?? "", limit: limit)
                    if table.entries[key] == nil {
                        key = BucketKey(tenant: tenant, limit: limit.id, agent: Self.overflowKey, tool: Self.overflowKey)
                    }
                    guard var entry = table.entries[key] else { continue }
                    entry.bucket.refill(rate: entry.rate, burst: entry.burst, now: now)
                    entry.bucket.giveBack(burst: limit.burst)
                    table.entries[key] = entry
                }
            }
        }
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

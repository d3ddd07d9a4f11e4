public import Logging
public import NIOCore
import NIOPosix
public import Policy
import Redis
import Synchronization

/// Rate limits shared by every replica through Redis, at the cost of a round trip per lease, not per call.
///
/// Each replica takes tokens from a Redis bucket a lease at a time (`SharedLimitSettings.leaseSize`) and spends them
/// locally; when a lease runs low (half spent) the next is fetched in the background, on the caller's event loop, so
/// most calls are decided with no I/O at all. A call finding its lease empty waits, on its event loop, for the lease
/// being fetched (the Redis command's deadline bounds the wait); calls waiting together get one fetch sized to them. When Redis grants nothing, the replica remembers until when the bucket
/// is empty and refuses meanwhile without asking again.
///
/// Over-admission bound: every token spent was first taken from the Redis bucket, so over any window the replicas
/// together admit at most what one exact bucket admits, plus the tokens they held when the window began: at most
/// `replicas × lease` tokens above the limit, plus calls already waiting for a lease then (tokens fetched for
/// waiting calls beyond a lease are dropped after `surplusSeconds` if those calls did not take them).
///
/// When Redis is out of reach the tenant's failure mode applies — `fail_closed` refuses (503), `local_fallback`
/// applies 1/replicas of each limit in this process — and tokens already leased are still spent. A background
/// probe (and the client's reconnect backoff) brings Redis back into use as soon as it answers again.
public final class SharedLimiter: SharedRateLimits {
    struct LeaseKey: Hashable {
        let tenant: String
        let limit: String
        let agent: String
        let tool: String
        /// A key counted in an overflow bucket has a lease of its own apart from the key's lease (its tokens came
        /// from the overflow bucket or from the key, whichever Redis charged).
        let overflowAgent: String?

        init(_ bucket: SharedBucket) {
            (tenant, limit, agent, tool) = (bucket.tenant, bucket.limit.id, bucket.keyAgent, bucket.keyTool)
            overflowAgent = bucket.overflowAgent
        }
    }

    /// An overflow bucket: the agent part of its key ("" for the tenant's).
    struct OverflowBucket: Hashable {
        let tenant: String
        let limit: String
        let agent: String

        init?(_ bucket: SharedBucket) {
            guard let agent = bucket.overflowAgent else { return nil }
            (tenant, limit, self.agent) = (bucket.tenant, bucket.limit.id, agent)
        }
    }

    /// Until when an overflow bucket is empty, as Redis said when it was charged, for the limit's rate and burst then.
    struct OverflowEmptiness {
        var until: Double
        var rate: Double
        var burst: Double
    }

    /// An agent of a tenant, whose calls made some of the leases.
    struct Owner: Hashable {
        let tenant: String
        let agent: String
    }

    /// The tokens this replica holds of one Redis bucket.
    struct Lease {
        var tokens = 0
        /// Until when (monotonic seconds) Redis said the bucket is empty.
        var emptyUntil = -Double.infinity
        /// The limit's rate and burst when Redis said so: a reload that changes them makes that answer void.
        var rate = 0.0
        var burst = 0.0
        /// Until when (monotonic seconds) this bucket's key is not asked for again: Redis refused the script on it
        /// (`WRONGTYPE`: another program wrote the key). Only this bucket falls to the failure mode meanwhile.
        var brokenUntil = -Double.infinity
        /// The fetch in progress, if any.
        var fetching: EventLoopFuture<Void>?
        /// Calls waiting for that fetch: what it asks Redis for, at least (so that calls arriving together are not
        /// served one token at a time).
        var demand = 0
        /// Tokens above a lease fetched for waiting calls are theirs until then; what they leave is dropped (so
        /// that a replica never holds more than a lease for long).
        var surplusUntil = -Double.infinity
        var lastUsed: Double
        /// The agent whose call made this lease (nil for an overflowed key's, which counts in no share).
        var owner: Owner?
        /// An overflowed key's: asked of Redis per call (no lease beyond what waiting calls need, no prefetch) and
        /// forgotten soon after, so that keys an agent invents past its share hold no tokens and little room here.
        var isOverflow = false

        /// How long the lease is kept once idle: until its bucket in Redis may be full again (a whole burst refilled,
        /// at most a day), and at least 10 s. A lease is where its key counts: forgotten while the bucket was still
        /// drained, the key looked new, and once its agent held its share of leases (made-up tool names keep it full)
        /// it went to the agent's overflow bucket, a second full burst (found by review: 6 calls where one bucket admits
        /// 3). Kept so, an agent's share also bounds the leases its calls keep here, not only their rate.
        var retentionSeconds: Double {
            if isOverflow { return Self.overflowRetentionSeconds }
            guard rate > 0, burst.isFinite else { return 10 }
            return max(10, min(86_400, burst / rate + 1))
        }

        /// How long an overflowed key's lease is kept once idle: long enough to serve the calls that waited for it
        /// and to remember for a moment that Redis said its bucket is empty.
        static let overflowRetentionSeconds = 1.0

        /// Takes `limit`'s rate and burst; when they differ from those Redis last answered for (a reload changed the
        /// policy), that answer's "empty until" is void and Redis is asked again.
        mutating func follow(_ limit: RateLimitRule) {
            guard rate != limit.ratePerSecond || burst != limit.burst else { return }
            (emptyUntil, rate, burst) = (-.infinity, limit.ratePerSecond, limit.burst)
        }
    }

    /// The settings in use.
    public let settings: SharedLimitSettings
    let client: RedisClient
    private let leases = Mutex<[LeaseKey: Lease]>([:])
    /// Overflow buckets Redis said are empty (taken inside `leases`' lock, never the other way round). While one is,
    /// calls of keys that overflow into it are refused here, without asking Redis: without this, each key an agent
    /// invented past its share cost a script run per call even once the overflow bucket was empty (found by review).
    private let emptyOverflow = Mutex<[OverflowBucket: OverflowEmptiness]>([:])
    /// How many leases each agent's calls made (taken inside `leases`' lock, never the other way round).
    private let owned = Mutex<(perAgent: [Owner: Int], perTenant: [String: Int])>(([:], [:]))
    /// The local shares used while Redis is out of reach (`local_fallback`).
    private let fallback = RateLimiter()
    private let storeUp = Atomic<Bool>(true)
    private let lastProbe = Mutex<Double>(-.infinity)
    private let lastCompaction = Mutex<Double>(-.infinity)
    private let clock: @Sendable () -> Double
    private let logger: Logger
    private let logThrottle = LogThrottle(interval: 5)
    /// Requests to Redis (lease fetches and probes) answered and failed, for metrics.
    let requestsAnswered = Atomic<Int>(0)
    let requestsFailed = Atomic<Int>(0)
    /// Most leases kept; idle ones are forgotten beyond this.
    static let maximumLeases = 100_000
    /// Most leases one agent's calls make (each is a bucket in Redis); beyond, its new keys share its overflow bucket
    /// of each limit. Leases idle past their `retentionSeconds` are forgotten, and with them their count.
    static let leasesPerAgent = 1_000
    /// Most leases one tenant's calls make (a quarter of `maximumLeases` by default); beyond, its new keys share the
    /// tenant's overflow bucket of each limit, so that a tenant inventing agent names (its identity provider mints
    /// them) cannot fill the table and have every other tenant's leases forgotten (found by review).
    let leasesPerTenant: Int

    public func placed(_ buckets: [SharedBucket]) -> [SharedBucket] {
        let now = clock()
        return leases.withLock { leases in
            buckets.map { bucket in
                guard !bucket.isOverflow, leases[LeaseKey(bucket)] == nil else { return bucket }
                let owner = Owner(tenant: bucket.tenant, agent: bucket.agent)
                func full() -> (agent: Bool, tenant: Bool) {
                    owned.withLock {
                        ($0.perAgent[owner, default: 0] >= Self.leasesPerAgent, $0.perTenant[owner.tenant, default: 0] >= leasesPerTenant)
                    }
                }
                if full() != (false, false), now - lastCompaction.withLock({ $0 }) >= 1 {
                    // Idle leases are forgotten (at most once a second) before a new key overflows.
                    lastCompaction.withLock { $0 = now }
                    compact(&leases, now: now)
                }
                // Only keys a caller can multiply overflow: an agent's, by tool names (a key per tool); a tenant's, by
                // agent names too (its identity provider mints them). A limit's key per agent stays where it counts
                // while only the agent's share is full, and a limit's one key for the tenant always (found by review:
                // with the agent's share full on one replica, its per-agent key went to the overflow bucket there and
                // to the real bucket on another, and each admitted a burst). A per-tool key names no agent: it goes to
                // the tenant's overflow bucket, never the agent's (each full agent had its own extra bucket of a
                // limit the tenant shares, found by the next review).
                let (agentFull, tenantFull) = full()
                if tenantFull && !(bucket.keyAgent.isEmpty && bucket.keyTool.isEmpty) { return bucket.tenantOverflow }
                if agentFull && !bucket.keyTool.isEmpty { return bucket.keyAgent.isEmpty ? bucket.tenantOverflow : bucket.overflow }
                return bucket
            }
        }
    }

    /// A limiter sharing buckets through `settings.redis`, reading time from `clock` (the gateway's monotonic
    /// seconds).
    public convenience init(settings: SharedLimitSettings, clock: @escaping @Sendable () -> Double, logger: Logger) {
        self.init(settings: settings, clock: clock, logger: logger, leasesPerTenant: SharedLimiter.maximumLeases / 4)
    }

    /// The same, with `leasesPerTenant` leases at most per tenant (tests use a small share).
    init(settings: SharedLimitSettings, clock: @escaping @Sendable () -> Double, logger: Logger, leasesPerTenant: Int) {
        self.leasesPerTenant = leasesPerTenant
        self.settings = settings
        self.client = RedisClient(settings: settings.redis, logger: logger)
        self.clock = clock
        self.logger = logger
    }

    /// Whether Redis answered the last time it was asked.
    public var isStoreReachable: Bool { storeUp.load(ordering: .relaxed) }

    public func isShared(_ limit: RateLimitRule) -> Bool { (limit.sharing ?? .global) == .global }

    public func take(_ buckets: [SharedBucket], now: Double) -> SharedTake {
        let reachable = storeUp.load(ordering: .relaxed)
        var prefetch: [SharedBucket] = []
        let onHand = leases.withLock { leases -> SharedTake? in
            var refusal: (index: Int, wait: Double)?
            var missing: [SharedBucket] = []
            var broken: [Int] = []
            for (index, bucket) in buckets.enumerated() {
                let key = LeaseKey(bucket)
                // Tokens beyond a lease belong to calls that waited for them: kept while a fetch for waiting calls
                // is still under way (more rounds to come), and for `surplusSeconds` after it ended.
                // An overflowed key's lease keeps one token: a call that waited for it and decides again late still finds
                // it (dropped, its retry charged Redis again; found by review).
                if let lease = leases[key], lease.tokens > 1, lease.fetching == nil, now > lease.surplusUntil {
                    let size = max(leaseSize(of: bucket), 1)
                    if lease.tokens > size { leases[key]!.tokens = size }
                }
                leases[key]?.follow(bucket.limit)
                let lease = leases[key]
                if let lease, lease.tokens >= 1 { continue }
                if let lease, lease.brokenUntil > now {
                    broken.append(index)
                } else if reachable, let lease, lease.emptyUntil > now {
                    let wait = lease.emptyUntil - now
                    if refusal == nil || wait > refusal!.wait { refusal = (index, wait) }
                } else if reachable, let until = emptyOverflowUntil(bucket), until > now {
                    // An overflowed key whose overflow bucket is empty: refused, even if Redis holds the key's own
                    // bucket with tokens (fewer calls admitted, never more).
                    let wait = until - now
                    if refusal == nil || wait > refusal!.wait { refusal = (index, wait) }
                } else {
                    missing.append(bucket)
                }
            }
            if let refusal { return .refused(index: refusal.index, retryAfter: refusal.wait, fallback: false) }
            if !missing.isEmpty { return reachable ? .mustAsk(missing) : nil }
            var spent = Array(buckets.indices)
            var local = RateLimiter.TakenTokens.none
            if !broken.isEmpty {
                // Buckets whose keys Redis refuses (while it answers for the others): the failure mode decides for
                // those alone. The call's other buckets are charged in Redis as usual, so a local share stands in for
                // the broken bucket only, never for a healthy one.
                guard settings.failureMode(of: buckets[0].tenant) == .localFallback else { return .unavailable }
                let shares = broken.map { buckets[$0].limit.share(of: settings.replicas) }
                let first = buckets[0]
                let (refused, taken) = fallback.take(tenant: first.tenant, agent: first.agent, tool: first.tool, limits: shares, now: now)
                if let refused {
                    let index = broken.first { buckets[$0].limit.id == refused.limit.id } ?? broken[0]
                    return .refused(index: index, retryAfter: refused.retryAfter, fallback: true)
                }
                spent.removeAll { broken.contains($0) }
                local = taken
            }
            for bucket in spent.map({ buckets[$0] }) {
                let key = LeaseKey(bucket)
                leases[key]!.tokens -= 1
                leases[key]!.lastUsed = now
                let lease = leases[key]!
                let size = leaseSize(of: bucket)
                if reachable, !bucket.isOverflow, lease.fetching == nil, lease.tokens * 2 <= size, lease.emptyUntil <= now {
                    prefetch.append(bucket)
                }
            }
            // Given back, each token returns where it came from: a healthy bucket's to its lease, a broken bucket's to
            // the local share that stood in for it.
            return .taken(SharedTokens(leased: spent.map { buckets[$0] }, local: local))
        }
        if !prefetch.isEmpty { _ = ask(prefetch, on: Self.currentLoop, waiting: false) }
        if let onHand { return onHand }
        // Redis is out of reach and some bucket has nothing on hand here: the tenant's failure mode decides.
        probe()
        let tenant = buckets[0].tenant
        switch settings.failureMode(of: tenant) {
        case .failClosed:
            return .unavailable
        case .localFallback:
            let shares = buckets.map { $0.limit.share(of: settings.replicas) }
            let (refusal, taken) = fallback.take(tenant: tenant, agent: buckets[0].agent, tool: buckets[0].tool, limits: shares, now: now)
            guard let refusal else { return .taken(SharedTokens(leased: [], local: taken)) }
            let index = shares.firstIndex { $0.id == refusal.limit.id } ?? 0
            return .refused(index: index, retryAfter: refusal.retryAfter, fallback: true)
        }
    }

    /// Until when the overflow bucket `bucket` counts in is empty, if Redis said so for the limit as it is now.
    private func emptyOverflowUntil(_ bucket: SharedBucket) -> Double? {
        guard let overflow = OverflowBucket(bucket) else { return nil }
        return emptyOverflow.withLock { known in
            guard let emptiness = known[overflow], emptiness.rate == bucket.limit.ratePerSecond, emptiness.burst == bucket.limit.burst
            else { return nil }
            return emptiness.until
        }
    }

    public func giveBack(_ tokens: SharedTokens, now: Double) {
        fallback.giveBack(tokens.local, now: now)
        guard !tokens.leased.isEmpty else { return }
        leases.withLock { leases in
            for bucket in tokens.leased { leases[LeaseKey(bucket)]?.tokens += 1 }
        }
    }

    /// Fetches a lease for each of `buckets` that has too little on hand (or joins the fetch under way) for calls
    /// that wait for it (`waiting`; a prefetch does not). A bucket named n times is needed by n calls (a batch): the
    /// fetch asks for at least that many tokens. The future succeeds when every fetch has ended, whatever it brought
    /// — the caller decides again.
    public func ask(_ buckets: [SharedBucket], on eventLoop: any EventLoop, waiting: Bool = true) -> EventLoopFuture<Void> {
        let now = clock()
        var waits: [EventLoopFuture<Void>] = []
        var start: [(SharedBucket, Int, EventLoopPromise<Void>)] = []
        var needed: [LeaseKey: (bucket: SharedBucket, calls: Int)] = [:]
        var order: [LeaseKey] = []
        for bucket in buckets {
            let key = LeaseKey(bucket)
            if needed[key] == nil { order.append(key) }
            needed[key, default: (bucket, 0)].calls += 1
        }
        leases.withLock { leases in
            if leases.count >= Self.maximumLeases, now - lastCompaction.withLock({ $0 }) >= 1 {
                lastCompaction.withLock { $0 = now }
                compact(&leases, now: now)
            }
            for key in order {
                let (bucket, calls) = needed[key]!
                var lease: Lease
                if let existing = leases[key] {
                    lease = existing
                } else {
                    lease = Lease(lastUsed: now)
                    lease.isOverflow = bucket.isOverflow
                    if !bucket.isOverflow {
                        let owner = Owner(tenant: bucket.tenant, agent: bucket.agent)
                        lease.owner = owner
                        owned.withLock {
                            $0.perAgent[owner, default: 0] += 1
                            $0.perTenant[owner.tenant, default: 0] += 1
                        }
                    }
                }
                if let fetching = lease.fetching {
                    if waiting { leases[key]!.demand += calls }
                    waits.append(fetching)
                    continue
                }
                lease.follow(bucket.limit)
                let size = leaseSize(of: bucket)
                let wanted = waiting ? calls : 0
                guard lease.tokens * 2 <= size || lease.tokens < wanted, lease.emptyUntil <= now, lease.brokenUntil <= now else {
                    continue
                }
                let promise = eventLoop.makePromise(of: Void.self)
                lease.fetching = promise.futureResult
                lease.demand = wanted
                leases[key] = lease
                waits.append(promise.futureResult)
                // A lease, or what the waiting calls need beyond what is on hand (never more than the burst: a batch
                // beyond it cannot be admitted whole anyway).
                let want = Int(min(Double(max(size, wanted) - lease.tokens), max(bucket.limit.burst.rounded(.down), 1)))
                start.append((bucket, max(want, 1), promise))
            }
        }
        for (bucket, want, promise) in start { fetch(bucket, want: want, round: 1, on: eventLoop, promise: promise) }
        return EventLoopFuture.andAllComplete(waits, on: eventLoop)
    }

    /// The tokens a lease of `bucket` holds: `SharedLimitSettings.leaseSize`, or none beyond what waiting calls
    /// need for a key counted in an overflow bucket (asked of Redis per call).
    private func leaseSize(of bucket: SharedBucket) -> Int {
        bucket.isOverflow ? 0 : settings.leaseSize(rate: bucket.limit.ratePerSecond, burst: bucket.limit.burst)
    }

    /// Most lease requests one fetch makes when calls keep joining it.
    static let maximumFetchRounds = 3
    /// How long tokens fetched beyond a lease for waiting calls stay theirs after the fetch ended (while it is under
    /// way they always are). The calls decide again within milliseconds, later on a loaded machine. A call whose
    /// client left, or that another limit refused, leaves its token.
    static let surplusSeconds = 0.5

    /// One lease request: the script's grant goes into the lease; a failure marks Redis out of reach. When Redis
    /// granted all that was asked and more calls are waiting than tokens are on hand (they joined while the request
    /// was under way), another request follows for the difference before the waiting calls are let go.
    private func fetch(_ bucket: SharedBucket, want: Int, round: Int, on eventLoop: any EventLoop, promise: EventLoopPromise<Void>) {
        let key = LeaseKey(bucket)
        TokenBucketScript.script.run(
            keys: TokenBucketScript.keys(bucket, prefix: settings.keyPrefix),
            arguments: TokenBucketScript.arguments(bucket.limit, want: want), on: client, eventLoop: eventLoop
        ).whenComplete { [self] result in
            let now = clock()
            switch result {
            case .success(let reply):
                guard let grant = TokenBucketScript.grant(reply, want: want, rate: bucket.limit.ratePerSecond) else {
                    endFetch(key)
                    failed(RedisError.protocolError("the token-bucket script answered \(reply)"))
                    return promise.succeed(())
                }
                let more = leases.withLock { leases -> Int? in
                    if grant.wait > 0, !grant.chargedOwnKey, let overflow = OverflowBucket(bucket) {
                        emptyOverflow.withLock {
                            $0[overflow] = OverflowEmptiness(
                                until: now + grant.wait, rate: bucket.limit.ratePerSecond, burst: bucket.limit.burst)
                        }
                    }
                    guard var lease = leases[key] else { return nil }
                    lease.tokens += grant.granted
                    // In use: a fetch of several rounds (each up to the command's deadline) must not outlast an
                    // overflowed key's short retention.
                    lease.lastUsed = now
                    // The bucket in Redis holds less than a token until then: calls beyond the lease are refused. Unless
                    // the limit changed while the request was under way (a reload): that answer was for the old one.
                    if grant.wait > 0, lease.rate == bucket.limit.ratePerSecond, lease.burst == bucket.limit.burst {
                        lease.emptyUntil = now + grant.wait
                    }
                    var more: Int?
                    if grant.granted == want, lease.demand > lease.tokens, round < Self.maximumFetchRounds {
                        more = Int(min(Double(lease.demand - lease.tokens), bucket.limit.burst))
                    } else {
                        if lease.demand > 0 { lease.surplusUntil = now + Self.surplusSeconds }
                        (lease.fetching, lease.demand) = (nil, 0)
                    }
                    leases[key] = lease
                    return more
                }
                reachable()
                if let more { return fetch(bucket, want: more, round: round + 1, on: eventLoop, promise: promise) }
                promise.succeed(())
            case .failure(let error) where Self.isKeyError(error):
                // This key holds something else (another program's value): this bucket fails, the others go on.
                endFetch(key, brokenUntil: now + 1)
                requestsFailed.wrappingAdd(1, ordering: .relaxed)
                if let suppressed = logThrottle.admit("redis-key") {
                    logger.error(
                        "shared rate limits: Redis refused a bucket's key: \(error); that bucket's tenant's failure mode applies to it (check key_prefix: another program may use these keys)",
                        metadata: ["tenant": "\(bucket.tenant)", "limit": "\(bucket.limit.id)", "suppressed": "\(suppressed)"])
                }
                promise.succeed(())
            case .failure(let error):
                endFetch(key)
                failed(error)
                promise.succeed(())
            }
        }
    }

    /// Whether `error` concerns one key, not the server: the script met a value of another type there.
    static func isKeyError(_ error: any Error) -> Bool {
        guard case .server(let message) = error as? RedisError else { return false }
        return message.contains("WRONGTYPE")
    }

    /// Ends `key`'s fetch without a grant; `brokenUntil` marks its key refused by Redis until then.
    private func endFetch(_ key: LeaseKey, brokenUntil: Double? = nil) {
        leases.withLock { leases in
            if let brokenUntil { leases[key]?.brokenUntil = brokenUntil }
            leases[key]?.fetching = nil
            leases[key]?.demand = 0
        }
    }

    /// While Redis is out of reach, at most every 250 ms: the lease script on a probe key, whose answer brings shared
    /// limits back.
    private func probe() {
        let now = clock()
        let due = lastProbe.withLock { last in
            guard now - last >= 0.25 else { return false }
            last = now
            return true
        }
        guard due else { return }
        // The lease script itself on a key of its own, asking for nothing: a server that answers PING but refuses
        // the script (out of memory, an ACL without EVALSHA, an old Redis) is not taken back into use.
        let probe = SharedBucket(
            tenant: "",
            limit: RateLimitRule(
                id: "probe", methods: [], tools: [], agents: [], ratePerSecond: 1, burst: 1, scope: .tenant, document: ""),
            agent: "", tool: "")
        TokenBucketScript.script.run(
            keys: [TokenBucketScript.key(probe, prefix: settings.keyPrefix)], arguments: TokenBucketScript.arguments(probe.limit, want: 0),
            on: client, eventLoop: Self.currentLoop
        ).whenComplete { [self] result in
            switch result {
            case .success(let reply) where TokenBucketScript.grant(reply, want: 0, rate: probe.limit.ratePerSecond) != nil: reachable()
            case .success(let reply): failed(RedisError.protocolError("the token-bucket script answered \(reply)"))
            case .failure(let error): failed(error)
            }
        }
    }

    private func reachable() {
        requestsAnswered.wrappingAdd(1, ordering: .relaxed)
        if !storeUp.exchange(true, ordering: .relaxed), logThrottle.admit("redis-back") != nil {
            logger.notice(
                "shared rate limits: Redis answers again; limits are shared again", metadata: ["redis": "\(settings.redis.address)"])
        }
    }

    /// Logged once per outage (when Redis goes from answering to not), at most every few seconds when it flaps.
    private func failed(_ error: any Error) {
        requestsFailed.wrappingAdd(1, ordering: .relaxed)
        // A server that refuses the script (out of memory, ACL) is as unusable as one that does not answer.
        let unreachable = (error as? RedisError)?.isUnavailability ?? true
        if storeUp.exchange(false, ordering: .relaxed), let suppressed = logThrottle.admit("redis") {
            logger.error(
                "shared rate limits: Redis \(unreachable ? "is out of reach" : "refused a lease request"): \(error); tenants' failure modes apply (fail_closed: 503, local_fallback: local shares)",
                metadata: ["redis": "\(settings.redis.address)", "suppressed": "\(suppressed)"])
        }
    }

    /// Forgets leases idle for their `retentionSeconds`, then — if more than 80 % of `maximumLeases` remain — the
    /// least recently used of those with no fetch under way, down to 80 %. Their tokens are lost: fewer calls admitted,
    /// never more. Runs at most once a second (the table may grow past its bound by what arrives in that second).
    private static func forgetIdle(_ leases: inout [LeaseKey: Lease], now: Double) {
        leases = leases.filter { _, lease in lease.fetching != nil || now - lease.lastUsed < lease.retentionSeconds }
        let target = maximumLeases * 4 / 5
        guard leases.count > target else { return }
        // Overflowed keys' leases first: they count in no share, so an agent past its share must not push other
        // tenants' leases out (found by review).
        let oldest = leases.filter { $0.value.fetching == nil }.sorted {
            ($0.value.isOverflow ? 0 : 1, $0.value.lastUsed) < ($1.value.isOverflow ? 0 : 1, $1.value.lastUsed)
        }
        for (key, _) in oldest.prefix(leases.count - target) { leases[key] = nil }
    }

    /// Forgets idle leases (`forgetIdle`), counts again the leases each agent's calls made, and forgets overflow
    /// buckets' emptiness once it has passed.
    private func compact(_ leases: inout [LeaseKey: Lease], now: Double) {
        Self.forgetIdle(&leases, now: now)
        recount(leases)
        emptyOverflow.withLock { known in known = known.filter { $0.value.until > now } }
    }

    /// Counts again, after some were forgotten, the leases each agent's calls made.
    private func recount(_ leases: [LeaseKey: Lease]) {
        var counts: [Owner: Int] = [:]
        var perTenant: [String: Int] = [:]
        for lease in leases.values {
            if let owner = lease.owner {
                counts[owner, default: 0] += 1
                perTenant[owner.tenant, default: 0] += 1
            }
        }
        owned.withLock { $0 = (counts, perTenant) }
    }

    /// The event loop the caller runs on (a gateway loop), or any loop for callers off the loops (large decisions).
    private static var currentLoop: any EventLoop {
        MultiThreadedEventLoopGroup.currentEventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
    }

    /// Closes the Redis connections.
    public func shutdown() { client.close() }
}

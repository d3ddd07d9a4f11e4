import Synchronization

/// The gateway's policy decision point: the current snapshot of every tenant's policies plus the rate limiter.
///
/// `reload` builds and validates a complete new snapshot on the side and swaps it in at once; a snapshot that
/// fails to load is refused and the previous one keeps serving. Rate-limit buckets survive reloads.
public final class PolicyEngine: Sendable {
    private let current: Mutex<PolicySnapshot>
    /// The rate limiter shared by every snapshot.
    public let limiter: RateLimiter

    /// An engine serving `snapshot`.
    public init(snapshot: PolicySnapshot, limiter: RateLimiter = RateLimiter()) {
        current = Mutex(snapshot)
        self.limiter = limiter
    }

    /// Loads `directory` and serves it.
    public convenience init(directory: String, limiter: RateLimiter = RateLimiter()) throws(PolicyLoadError) {
        self.init(snapshot: try PolicySnapshot.load(directory: directory), limiter: limiter)
    }

    /// The snapshot being served.
    public var snapshot: PolicySnapshot { current.withLock { $0 } }

    /// Loads `directory` (default: what the current snapshot was loaded from, a directory or a single file) and swaps
    /// it in if every file is valid; otherwise
    /// throws and keeps serving the previous snapshot.
    @discardableResult
    public func reload(directory: String? = nil, requiring tenants: [String] = []) throws(PolicyLoadError) -> PolicySnapshot {
        let fresh: PolicySnapshot
        if let directory {
            fresh = try PolicySnapshot.load(directory: directory)
        } else {
            fresh = try PolicySnapshot.reload(snapshot)
        }
        // What start-up refuses, a reload refuses too (found by review: a removed tenant folder was reloaded, every
        // call of that tenant then denied, and the reload reported as a success).
        for tenant in tenants.sorted() where fresh.tenants[tenant] == nil {
            throw PolicyLoadError(
                file: fresh.directory, reason: "no policies for tenant \(tenant), which the configuration has (every call would be denied)")
        }
        current.withLock { $0 = fresh }
        return fresh
    }

    /// The full decision for `request` at `now` (seconds on a monotonic clock): policy first, then, for calls the
    /// policy lets through, the tenant's rate limits (all kept in this process).
    public func decide(_ request: PolicyRequest, now: Double) -> PolicyDecision {
        guard case .decided(let decision) = decide(request, now: now, shared: nil, ledger: nil) else {
            preconditionFailure("without a shared store every decision is made at once")
        }
        return decision
    }

    /// The full decision for `request` at `now`, with the limits `shared` keeps counted there. A call whose shared
    /// buckets have nothing on hand is not decided (`mustAsk`) and nothing is counted for it; the tokens a decided
    /// call took are written to `ledger`, so that an attempt abandoned for another call's sake can give them back.
    ///
    /// All-or-nothing across both kinds: shared tokens are taken first (they are on hand here, so giving them back
    /// is exact), then local ones; a local refusal gives the shared tokens back.
    public func decide(
        _ request: PolicyRequest, now: Double, shared: (any SharedRateLimits)?, ledger: RateLimitLedger?
    ) -> DecisionStep {
        let snapshot = self.snapshot
        let decision = snapshot.evaluate(request)
        guard decision.outcome.permits else { return .decided(decision) }
        return count(request, passing: decision, in: snapshot, now: now, shared: shared, ledger: ledger)
    }

    /// `request` — a protocol request the policy does not decide (a list, `initialize`, `ping`: its `method`, no
    /// target) — counted against the tenant's rate limits that name its method, as `decide` counts a permitted call:
    /// `decision` when every such limit had a token (or none names it), else the refusal; `mustAsk` when shared buckets
    /// must be fetched first.
    public func count(
        _ request: PolicyRequest, passing decision: PolicyDecision, now: Double, shared: (any SharedRateLimits)?,
        ledger: RateLimitLedger?
    ) -> DecisionStep {
        count(request, passing: decision, in: snapshot, now: now, shared: shared, ledger: ledger)
    }

    private func count(
        _ request: PolicyRequest, passing decision: PolicyDecision, in snapshot: PolicySnapshot, now: Double,
        shared: (any SharedRateLimits)?, ledger: RateLimitLedger?
    ) -> DecisionStep {
        var decision = decision
        guard let set = snapshot.tenants[request.tenant] else { return .decided(decision) }
        let applicable = set.rateLimits.filter { $0.counts(method: request.method, target: request.target, agent: request.agent) }
        guard !applicable.isEmpty else { return .decided(decision) }
        var local = applicable
        var buckets: [SharedBucket] = []
        var sharedTokens: SharedTokens?
        if let shared {
            local = applicable.filter { !shared.isShared($0) }
            buckets = shared.placed(
                applicable.filter { shared.isShared($0) }.map {
                    SharedBucket(tenant: request.tenant, limit: $0, agent: request.agent, tool: request.target ?? "")
                })
        }
        if let shared, !buckets.isEmpty {
            switch shared.take(buckets, now: now) {
            case .mustAsk(let missing):
                return .mustAsk(missing)
            case .unavailable:
                var refused = PolicyDecision(
                    outcome: .limitsUnavailable, rule: buckets[0].limit.id, document: buckets[0].limit.document,
                    reason:
                        "rate limit \(buckets[0].limit.id) is shared across replicas and its store is unreachable; this tenant fails closed",
                    matches: decision.matches, logArguments: decision.logArguments)
                refused.sharedLimitsNote = .failClosed
                return .decided(refused)
            case .refused(let index, let retryAfter, let fellBack):
                return .decided(Self.rateLimited(buckets[index].limit, retryAfter, decision, note: fellBack ? .localFallback : nil))
            case .taken(let tokens):
                sharedTokens = tokens
            }
        }
        let fallback = sharedTokens?.usedLocalShares == true
        let (refusal, taken) = limiter.take(tenant: request.tenant, agent: request.agent, tool: request.target, limits: local, now: now)
        if let refusal {
            if let sharedTokens { shared?.giveBack(sharedTokens, now: now) }
            return .decided(Self.rateLimited(refusal.limit, refusal.retryAfter, decision, note: fallback ? .localFallback : nil))
        }
        ledger?.recordLocal(taken)
        if let sharedTokens { ledger?.recordShared(sharedTokens) }
        if fallback { decision.sharedLimitsNote = .localFallback }
        return .decided(decision)
    }

    private static func rateLimited(
        _ limit: RateLimitRule, _ retryAfter: Double, _ decision: PolicyDecision, note: SharedLimitsNote?
    ) -> PolicyDecision {
        var refused = PolicyDecision(
            outcome: .rateLimited(retryAfter: retryAfter), rule: limit.id, document: limit.document,
            reason: "rate limit \(limit.id) (\(limit.ratePerSecond)/s, burst \(limit.burstText), per \(limit.scope.rawValue)) exceeded",
            matches: decision.matches, logArguments: decision.logArguments)
        refused.sharedLimitsNote = note
        return refused
    }
}

/// A decision, or what must be fetched before it can be made.
public enum DecisionStep: Sendable {
    /// Decided.
    case decided(PolicyDecision)
    /// These shared buckets have nothing on hand: fetch them, then decide again.
    case mustAsk([SharedBucket])
}

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

    /// Loads `directory` (default: the current snapshot's) and swaps it in if every file is valid; otherwise
    /// throws and keeps serving the previous snapshot.
    @discardableResult
    public func reload(directory: String? = nil) throws(PolicyLoadError) -> PolicySnapshot {
        let fresh = try PolicySnapshot.load(directory: directory ?? snapshot.directory)
        current.withLock { $0 = fresh }
        return fresh
    }

    /// The full decision for `request` at `now` (seconds on a monotonic clock): policy first, then, for calls the
    /// policy lets through, the tenant's rate limits.
    public func decide(_ request: PolicyRequest, now: Double) -> PolicyDecision {
        let snapshot = self.snapshot
        let decision = snapshot.evaluate(request)
        guard decision.outcome.permits, let set = snapshot.tenants[request.tenant] else { return decision }
        guard
            let refusal = limiter.consume(
                tenant: request.tenant, agent: request.agent, method: request.method, tool: request.target,
                limits: set.rateLimits, now: now)
        else { return decision }
        return PolicyDecision(
            outcome: .rateLimited(retryAfter: refusal.retryAfter), rule: refusal.limit.id, document: refusal.limit.document,
            reason:
                "rate limit \(refusal.limit.id) (\(refusal.limit.ratePerSecond)/s, burst \(Int(refusal.limit.burst)), per \(refusal.limit.scope.rawValue)) exceeded",
            matches: decision.matches, logArguments: decision.logArguments)
    }
}

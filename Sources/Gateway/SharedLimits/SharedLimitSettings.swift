public import Redis

/// What a tenant's shared rate limits do while their store (Redis) is out of reach.
public enum SharedLimitFailureMode: String, Sendable, Hashable, CaseIterable {
    /// Calls counted by a shared limit get 503 with an audit record (the default).
    case failClosed = "fail_closed"
    /// Each replica enforces its share of each shared limit locally: the rate and burst divided by `replicas`.
    case localFallback = "local_fallback"
}

/// How rate limits are shared across replicas through Redis.
public struct SharedLimitSettings: Sendable {
    /// The Redis server.
    public var redis: RedisSettings
    /// Prefix of every key the gateway writes (so that several gateways, or other programs, can share a server).
    public var keyPrefix: String = "mcpgw:rl:"
    /// A lease holds at most this many seconds' worth of a limit's rate (at least 1 token, at most `maximumLease`
    /// and the limit's burst): the tokens a replica takes from Redis at once and spends without asking again.
    public var leaseSeconds: Double = 0.05
    /// The largest lease, in tokens.
    public var maximumLease: Int = 64
    /// How many replicas share the limits: under `local_fallback` each enforces 1/replicas of every shared limit.
    public var replicas: Int = 1
    /// The failure mode of tenants that do not name one.
    public var defaultFailureMode: SharedLimitFailureMode = .failClosed
    /// Per-tenant failure modes.
    public var failureModes: [String: SharedLimitFailureMode] = [:]

    /// Settings for the server `redis`, with the defaults above.
    public init(redis: RedisSettings) { self.redis = redis }

    /// The failure mode of `tenant`.
    public func failureMode(of tenant: String) -> SharedLimitFailureMode { failureModes[tenant] ?? defaultFailureMode }

    /// The lease size, in tokens, for a limit of `rate` per second and `burst`.
    public func leaseSize(rate: Double, burst: Double) -> Int {
        // In floating point until bounded: a policy may say 1e300 per second.
        let tokens = min(rate * leaseSeconds, burst, Double(maximumLease)).rounded(.down)
        return tokens.isFinite && tokens >= 1 ? Int(tokens) : 1
    }
}

public import Logging
import NIOCore
import Synchronization

/// The gateway's upstream HTTP client: tenants' endpoints, one connection pool per event loop, and the budgets
/// that keep tenants and agents from starving each other. Shared by every connection.
public final class UpstreamClient: Sendable {
    private let endpoints: [String: UpstreamEndpoint]

    /// The tenants that have an upstream.
    public var tenants: Set<String> { Set(endpoints.keys) }
    /// Tenants' legacy HTTP+SSE endpoints (`GET /sse` and the message endpoints it announces live there).
    private let legacyEndpoints: [String: UpstreamEndpoint]
    let budgets = UpstreamBudgets()
    /// Bytes of answers held whole, per tenant and in all.
    let heldBytes: HeldBytes
    /// Counts of what the connections did, for metrics.
    let statistics = UpstreamStatistics()
    /// The outcome of the latest connect and TLS handshake to each upstream, for readiness.
    let reachability = UpstreamReachability()
    private let limits: GatewayLimits
    private let logger: Logger
    private let pools = Mutex<[ObjectIdentifier: UpstreamPool]>([:])

    /// A client for these tenants' upstreams; every URL is parsed and every TLS context built now.
    public init(upstreams: [String: UpstreamConfiguration], limits: GatewayLimits, logger: Logger) throws(UpstreamConfigurationError) {
        var endpoints: [String: UpstreamEndpoint] = [:]
        var legacy: [String: UpstreamEndpoint] = [:]
        // Endpoints of one upstream (tenants sharing a URL) share the bound on idle connections to it (each tenant's
        // connections are pooled apart: `UpstreamEndpoint.connectionKey`).
        var idleCounts: [String: IdleConnectionCount] = [:]
        func idleCount(_ key: String) -> IdleConnectionCount {
            if let shared = idleCounts[key] { return shared }
            let count = IdleConnectionCount()
            idleCounts[key] = count
            return count
        }
        for (tenant, configuration) in upstreams {
            endpoints[tenant] = try UpstreamEndpoint(configuration, tenant: tenant, idleCount: idleCount)
            if let url = configuration.legacySSEURL {
                var legacyConfiguration = configuration
                legacyConfiguration.url = url
                legacy[tenant] = try UpstreamEndpoint(legacyConfiguration, tenant: tenant, idleCount: idleCount)
            }
        }
        self.endpoints = endpoints
        self.legacyEndpoints = legacy
        self.limits = limits
        self.logger = logger
        self.heldBytes = HeldBytes(
            maximumPerTenant: limits.maximumHeldResponseBytesPerTenant, maximumTotal: limits.maximumHeldResponseBytes)
    }

    /// The upstream of `tenant`, if one is configured.
    func endpoint(for tenant: String) -> UpstreamEndpoint? { endpoints[tenant] }

    /// The tenant's legacy HTTP+SSE endpoint, if it has one.
    func legacyEndpoint(for tenant: String) -> UpstreamEndpoint? { legacyEndpoints[tenant] }

    /// The pool of `eventLoop` (made on first use).
    func pool(for eventLoop: any EventLoop) -> UpstreamPool {
        let id = ObjectIdentifier(eventLoop)
        return pools.withLock { pools in
            if let pool = pools[id] { return pool }
            let pool = UpstreamPool(
                eventLoop: eventLoop, budgets: budgets, statistics: statistics, limits: limits, logger: logger,
                reachability: reachability)
            pools[id] = pool
            return pool
        }
    }

    /// Why each tenant's upstream cannot be reached, for the tenants whose latest connect (to the upstream, whichever
    /// tenant's call made it) or latest TLS handshake (their own) failed. Tenants whose upstream was never tried, or
    /// was reached, are not listed.
    public func unreachableUpstreams() -> [String: UnreachableUpstream] {
        var unreachable: [String: UnreachableUpstream] = [:]
        for (tenant, endpoint) in endpoints {
            for key in endpoint.tls == nil ? [endpoint.key] : [endpoint.key, endpoint.connectionKey] {
                guard let outcome = reachability.outcome(key), !outcome.reached else { continue }
                unreachable[tenant] = UnreachableUpstream(
                    upstream: endpoint.key, error: outcome.error ?? "", since: outcome.since)
                break
            }
        }
        return unreachable
    }

    /// Starts, on `eventLoop`, a probe of each tenant's upstream found unreachable whose latest attempt ended at
    /// least `interval` seconds ago (one probe at a time per upstream, and per tenant for its TLS handshake). What a
    /// probe finds is recorded when it ends; this returns at once.
    ///
    /// A TLS handshake is per tenant, but when one tenant's fails, the upstream's certificate may be what broke: every
    /// other tenant of that upstream whose own handshake has not been tried since that tenant's began failing is
    /// probed too (once), so a broken HTTPS upstream is listed for all the tenants it fails, not only the one that
    /// called.
    func probeUnreachable(on eventLoop: any EventLoop, interval: Double = 1) {
        let pool = self.pool(for: eventLoop)
        // Per upstream, since when a tenant's handshake with it has been failing (the latest such time).
        var handshakesFailingSince: [String: Double] = [:]
        for endpoint in endpoints.values where endpoint.tls != nil {
            guard let tls = reachability.outcome(endpoint.connectionKey), !tls.reached else { continue }
            handshakesFailingSince[endpoint.key] = max(handshakesFailingSince[endpoint.key] ?? -.infinity, tls.since)
        }
        for endpoint in endpoints.values {
            let key: String
            var unlessTriedSince: Double?
            if let tcp = reachability.outcome(endpoint.key), !tcp.reached {
                key = endpoint.key
            } else if endpoint.tls != nil, let tls = reachability.outcome(endpoint.connectionKey), !tls.reached {
                key = endpoint.connectionKey
            } else if endpoint.tls != nil, let since = handshakesFailingSince[endpoint.key] {
                key = endpoint.connectionKey
                unlessTriedSince = since
            } else {
                continue
            }
            guard reachability.beginProbe(key, interval: interval, unlessTriedSince: unlessTriedSince) else { continue }
            let reachability = self.reachability
            eventLoop.execute {
                pool.probe(endpoint) { reachability.probeEnded(key) }
            }
        }
    }

    /// Closes idle upstream connections on every loop (connections carrying a request close with it).
    public func shutdown() async {
        let all = pools.withLock { Array($0.values) }
        for pool in all {
            try? await pool.eventLoop.submit { pool.closeIdle() }.get()
        }
    }
}

/// A tenant's upstream that the latest attempt could not reach.
public struct UnreachableUpstream: Sendable, Hashable {
    /// The upstream, as `scheme://host:port`.
    public var upstream: String
    /// What failed: the connect or the TLS handshake, as the attempt reported it.
    public var error: String
    /// Since when (monotonic seconds) the upstream has been unreachable.
    public var since: Double
}

/// What the upstream connections of one gateway did, counted across event loops.
final class UpstreamStatistics: Sendable {
    /// Times a connection stopped reading its upstream because the client could not take more (backpressure).
    let readPauses = Atomic<Int>(0)
}

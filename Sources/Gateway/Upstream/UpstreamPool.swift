import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TLS

/// The upstream connections of one event loop: idle keep-alive connections per upstream and tenant
/// (`UpstreamEndpoint.connectionKey`), reused by requests of the same loop, so a request never leaves its loop.
/// Touched only on that loop.
final class UpstreamPool {
    /// How often each connection checks its timers (head, idle stream, idle in the pool).
    static let tickInterval = TimeAmount.milliseconds(100)
    /// Idle connections kept per upstream and tenant on one loop; more are closed when released.
    static let maximumIdlePerUpstream = 64

    let eventLoop: any EventLoop
    private let budgets: UpstreamBudgets
    /// The gateway's counts of what upstream connections did.
    let statistics: UpstreamStatistics
    private let limits: GatewayLimits
    private let logger: Logger
    private var idle: [String: [UpstreamConnection]] = [:]
    /// Resolves upstream host names; nil: NIO's (getaddrinfo).
    private let resolver: (any Resolver & Sendable)?
    /// Where the outcome of each connect and TLS handshake is recorded, for readiness.
    let reachability: UpstreamReachability

    init(
        eventLoop: any EventLoop, budgets: UpstreamBudgets, statistics: UpstreamStatistics, limits: GatewayLimits, logger: Logger,
        resolver: (any Resolver & Sendable)? = nil, reachability: UpstreamReachability = UpstreamReachability()
    ) {
        self.resolver = resolver
        self.reachability = reachability
        self.statistics = statistics
        self.eventLoop = eventLoop
        self.budgets = budgets
        self.limits = limits
        self.logger = logger
    }

    /// An idle connection to `endpoint` (unless `reusingIdle` is false), or a new one (within the upstream's connection
    /// budget), handed to `completion` on this loop.
    func acquire(
        _ endpoint: UpstreamEndpoint, reusingIdle: Bool = true,
        _ completion: @escaping (Result<UpstreamConnection, UpstreamFailure>) -> Void
    ) {
        eventLoop.preconditionInEventLoop()
        if reusingIdle, let connection = idleConnection(endpoint) { return completion(.success(connection)) }
        connect(endpoint, completion)
    }

    /// Opens a connection to `endpoint` that carries no request: it closes as soon as its TLS handshake ends (at
    /// once for plain HTTP), its outcomes recorded in `reachability` as any connection's are. `ended` is called on
    /// this loop when the probe is over. Within the upstream's connection budget; no probe when it is spent (the
    /// upstream is then being connected to anyway).
    func probe(_ endpoint: UpstreamEndpoint, ended: @escaping () -> Void) {
        eventLoop.preconditionInEventLoop()
        connect(endpoint) { result in
            guard case .success(let connection) = result else { return ended() }
            connection.closeOnceHandshaken(ended)
        }
    }

    /// A new connection to `endpoint`, within the upstream's connection budget. The outcome of the TCP connect is
    /// recorded under the upstream's key (that of its TLS handshake, under the tenant's, by the connection).
    private func connect(_ endpoint: UpstreamEndpoint, _ completion: @escaping (Result<UpstreamConnection, UpstreamFailure>) -> Void) {
        let budget = UpstreamBudgets.Budget.upstreamConnections(endpoint.key)
        if budgets.acquire([(budget, limits.maximumUpstreamConnections)]) != nil {
            // Connections are pooled per tenant, but counted per upstream: another tenant's idle connection to the same
            // upstream gives way (closing it gives its place back at once), so idle connections never refuse a request.
            guard closeIdleConnection(ofUpstream: endpoint.key, except: endpoint.connectionKey),
                budgets.acquire([(budget, limits.maximumUpstreamConnections)]) == nil
            else { return completion(.failure(.connectionBudget)) }
        }
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        let logger = self.logger
        let budgets = self.budgets
        let reachability = self.reachability
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(limits.upstreamConnectTimeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Handlers of their own for every channel: a host name with several addresses makes one channel
                    // per address tried, and a losing attempt's handlers are removed after the winner's are added.
                    let pipeline = channel.pipeline.syncOperations
                    if let tls = endpoint.tls {
                        try pipeline.addHandler(TLSHandler(context: tls, serverHostname: endpoint.serverName, logger: logger))
                    }
                    // The connection frames its responses itself; requests need no encoder: it writes them as
                    // rendered (`UpstreamRequest`).
                    try pipeline.addHandler(
                        UpstreamConnection(
                            key: endpoint.connectionKey, pool: pool.value, idleConnections: endpoint.idleConnections,
                            reuseWindow: endpoint.reuseWindow, handshakeRecordedIn: endpoint.tls == nil ? nil : reachability))
                }
            }
        if let resolver { bootstrap = bootstrap.resolver(resolver) }
        bootstrap.connect(host: endpoint.host, port: endpoint.port).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                reachability.reached(endpoint.key)
                do {
                    let connection = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
                    // Given back as soon as the connection starts closing, so that a request right after can open
                    // another in its place.
                    connection.opened(holding: budget, of: budgets)
                    completion(.success(connection))
                } catch {
                    // Closed before it could be used (its handlers are gone): a failed connection like any other.
                    budgets.release([budget])
                    channel.close(promise: nil)
                    completion(.failure(.connect("the connection closed as it opened")))
                }
            case .failure(let error):
                budgets.release([budget])
                reachability.failed(endpoint.key, error: "\(error)")
                completion(.failure(.connect("\(error)")))
            }
        }
    }

    /// An idle connection to `endpoint` that can carry a request now, if there is one (no closure to allocate: the
    /// common case of a busy gateway asks this first).
    func idleConnection(_ endpoint: UpstreamEndpoint) -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        guard let index = idle.index(forKey: endpoint.connectionKey) else { return nil }
        while let connection = idle.values[index].popLast() {
            connection.idleConnections.leave()
            if connection.isUsable { return connection }
            // Idle too long to be reused safely: closed now, which gives its connection budget back at once.
            connection.cancel()
        }
        return nil
    }

    /// A connection whose response is complete and that may carry another request. Kept idle within this loop's
    /// bound and, across all loops, within half the upstream's connection budget (so that every loop can still open
    /// connections); closed otherwise.
    func release(_ connection: UpstreamConnection) {
        guard idle[connection.key]?.count ?? 0 < Self.maximumIdlePerUpstream,
            connection.idleConnections.enter(limit: max(1, limits.maximumUpstreamConnections / 2))
        else {
            connection.cancel()
            return
        }
        // Appended in place: copying the list out and back would copy its storage for every request.
        idle[connection.key, default: []].append(connection)
    }

    /// Closes one idle connection of this loop to upstream `key` that another tenant's requests use (not
    /// `connectionKey`'s); whether there was one.
    private func closeIdleConnection(ofUpstream key: String, except connectionKey: String) -> Bool {
        let prefix = key + " "
        guard let index = idle.firstIndex(where: { $0.key != connectionKey && $0.key.hasPrefix(prefix) && !$0.value.isEmpty }),
            let connection = idle.values[index].popLast()
        else { return false }
        connection.idleConnections.leave()
        connection.cancel()
        return true
    }

    /// Forgets a connection that closed.
    func remove(_ connection: UpstreamConnection) {
        guard let index = idle[connection.key]?.firstIndex(where: { $0 === connection }) else { return }
        idle[connection.key]!.remove(at: index)
        connection.idleConnections.leave()
    }

    /// Closes every idle connection (shutdown).
    func closeIdle() {
        let all = idle.values.flatMap { $0 }
        idle = [:]
        for connection in all {
            connection.idleConnections.leave()
            connection.cancel()
        }
    }
}

// Every access happens on `eventLoop` (checked in `acquire`); the client reaches a pool only through its loop.
extension UpstreamPool: @unchecked Sendable {}

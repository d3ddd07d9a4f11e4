import Synchronization

/// Counters of what tenants and agents hold upstream (requests in flight, long-lived streams, connections), shared
/// by every event loop, so that one tenant or agent exhausting its share never takes another's.
final class UpstreamBudgets: Sendable {
    /// One thing that is counted.
    enum Budget: Hashable, Sendable {
        /// Requests of a tenant in flight upstream.
        case tenantRequests(String)
        /// Requests of one agent (`tenant/agent`) in flight upstream.
        case agentRequests(String)
        /// GET streams of a tenant.
        case tenantStreams(String)
        /// GET streams of one agent (`tenant/agent`).
        case agentStreams(String)
        /// Connections open to one upstream (`scheme://host:port`).
        case upstreamConnections(String)
    }

    private let counts = Mutex<[Budget: Int]>([:])

    /// Takes one unit of each budget, all or nothing; returns the first budget that is full (nothing is taken then).
    func acquire(_ budgets: [(Budget, limit: Int)]) -> Budget? {
        counts.withLock { counts in
            for (budget, limit) in budgets where counts[budget, default: 0] >= limit { return budget }
            for (budget, _) in budgets { counts[budget, default: 0] += 1 }
            return nil
        }
    }

    /// Open GET streams per tenant.
    func streamsByTenant() -> [String: Int] {
        counts.withLock { counts in
            var result: [String: Int] = [:]
            for (budget, count) in counts {
                if case .tenantStreams(let tenant) = budget { result[tenant] = count }
            }
            return result
        }
    }

    /// Gives back one unit of each budget.
    func release(_ budgets: [Budget]) {
        counts.withLock { counts in
            for budget in budgets {
                let left = counts[budget, default: 0] - 1
                counts[budget] = left > 0 ? left : nil
            }
        }
    }

}

/// How many connections to one upstream sit idle in the pools of all event loops together. Idle connections count
/// against the upstream's connection budget: without a bound across loops, one loop's idle connections could hold all
/// of it while another loop has none and must refuse.
final class IdleConnectionCount: Sendable {
    private let count = Atomic<Int>(0)

    /// A new count, at zero.
    init() {}

    /// Takes a place if fewer than `limit` are taken.
    func enter(limit: Int) -> Bool {
        var current = count.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, found) = count.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = found
        }
        return false
    }

    /// Gives a place back.
    func leave() { count.wrappingSubtract(1, ordering: .relaxed) }

    /// The places taken now.
    var value: Int { count.load(ordering: .relaxed) }
}

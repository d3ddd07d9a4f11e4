import Synchronization

/// A bound on bytes the gateway holds on behalf of tenants, per tenant and in all, so that one tenant cannot take the
/// memory every tenant shares. Two are kept:
/// - answers held whole (`UpstreamClient.heldBytes`): list and task answers collected to filter or rewrite them, SSE
///   events being assembled, and collected answers written to a client that has not read them yet. Each answer is
///   bounded on its own (`max_filtered_response_bytes`).
/// - request bodies being received (`GatewayServices.receivingBodies`), beyond the first bytes of each: each body is
///   bounded on its own (`max_body_bytes`), and a body that stops arriving is cut (`ClientDeadlines`), but many
///   connections sending large bodies slowly would hold their sum.
final class HeldBytes: Sendable {
    private struct State {
        var total = 0
        var perTenant: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// Bytes one tenant may hold at once.
    let maximumPerTenant: Int
    /// Bytes all tenants may hold at once.
    let maximumTotal: Int

    /// A budget of `maximumPerTenant` bytes per tenant and `maximumTotal` in all.
    init(maximumPerTenant: Int, maximumTotal: Int) {
        self.maximumPerTenant = maximumPerTenant
        self.maximumTotal = maximumTotal
    }

    /// Takes `bytes` for `tenant` when both its share and the total stay within bounds (nothing is taken otherwise);
    /// with `always`, takes them regardless (bytes already in hand that cannot be refused now).
    func take(_ bytes: Int, tenant: String, always: Bool = false) -> Bool {
        state.withLock { state in
            let held = state.perTenant[tenant, default: 0]
            guard always || (held + bytes <= maximumPerTenant && state.total + bytes <= maximumTotal) else { return false }
            state.perTenant[tenant] = held + bytes
            state.total += bytes
            return true
        }
    }

    /// Gives back `bytes` taken for `tenant`.
    func give(_ bytes: Int, tenant: String) {
        guard bytes > 0 else { return }
        state.withLock { state in
            let left = state.perTenant[tenant, default: 0] - bytes
            state.perTenant[tenant] = left > 0 ? left : nil
            state.total -= bytes
        }
    }

    /// Bytes held now, in all.
    var total: Int { state.withLock { $0.total } }
}

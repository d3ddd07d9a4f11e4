import Synchronization

/// Bytes the gateway holds to see answers whole: list and task answers collected to filter or rewrite them, SSE events
/// being assembled, and collected answers written to a client that has not read them yet. Each answer is bounded on
/// its own (`max_filtered_response_bytes`); this bounds their sum per tenant and in all, so one tenant's upstream, or
/// clients that ask for large answers and never read them, cannot take the memory every tenant shares.
final class HeldResponseBytes: Sendable {
    private struct State {
        var total = 0
        var perTenant: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// Bytes one tenant's answers may hold at once.
    let maximumPerTenant: Int
    /// Bytes all answers may hold at once.
    let maximumTotal: Int

    /// A budget of `maximumPerTenant` bytes per tenant and `maximumTotal` in all.
    init(maximumPerTenant: Int, maximumTotal: Int) {
        self.maximumPerTenant = maximumPerTenant
        self.maximumTotal = maximumTotal
    }

    /// Takes `bytes` for `tenant` when both its share and the total stay within bounds (nothing is taken otherwise);
    /// with `always`, takes them regardless (an answer already in hand, which is written now).
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

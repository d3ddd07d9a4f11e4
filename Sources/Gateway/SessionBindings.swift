import Synchronization

/// Which principal created each MCP session, so that a session id is never used by anyone else (MCP: sessions
/// are not authentication). Bounded: beyond `capacity` sessions the oldest bindings are forgotten, after which
/// the upstream's own session check is the only one for them.
public final class SessionBindings: Sendable {
    private struct State {
        var owners: [String: String] = [:]
        var order: [String] = []
    }

    private let state = Mutex(State())
    private let capacity: Int

    /// Bindings for at most `capacity` sessions.
    public init(capacity: Int = 100_000) { self.capacity = capacity }

    /// Binds `session` to `owner` (`tenant/agent`).
    public func bind(_ session: String, to owner: String) {
        state.withLock { state in
            if state.owners.updateValue(owner, forKey: session) == nil { state.order.append(session) }
            if state.order.count > capacity {
                let excess = state.order.count - capacity
                for old in state.order.prefix(excess) { state.owners[old] = nil }
                state.order.removeFirst(excess)
            }
        }
    }

    /// The owner of `session`, if known.
    public func owner(of session: String) -> String? { state.withLock { $0.owners[session] } }

    /// Forgets `session` (after DELETE).
    public func unbind(_ session: String) {
        state.withLock { state in
            if state.owners.removeValue(forKey: session) != nil { state.order.removeAll { $0 == session } }
        }
    }
}

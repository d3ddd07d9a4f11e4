import Synchronization

/// The TLS context in force for new connections, replaceable as a whole (SIGHUP: a renewed certificate, a CA added,
/// a new CRL). A connection keeps the context it started with, so established connections are never disturbed.
public final class TLSContextStore: Sendable {
    private let context: Mutex<TLSContext>
    private let changes = Atomic<Int>(0)
    private let observers = Mutex<[@Sendable () -> Void]>([])

    /// Counts the contexts put in force: a connection that saw another count than its own was verified against an
    /// earlier trust (read it before `current`).
    public var generation: Int { changes.load(ordering: .acquiring) }

    /// A store serving `context`.
    public init(_ context: TLSContext) { self.context = Mutex(context) }

    /// The context for a connection that starts now.
    public var current: TLSContext { context.withLock { $0 } }

    /// Builds a context from `configuration` and, only if that succeeds, puts it in force; on failure the previous
    /// context stays and the error says why.
    @discardableResult
    public func reload(_ configuration: TLSConfiguration) throws(TLSError) -> TLSContext {
        let fresh = try TLSContext(role: current.role, configuration: configuration)
        replace(with: fresh)
        return fresh
    }

    /// Puts `fresh` in force for connections that start from now on (a context built and checked elsewhere, so that
    /// several stores can change together).
    public func replace(with fresh: TLSContext) {
        context.withLock { $0 = fresh }
        changes.add(1, ordering: .releasing)
        for observer in observers.withLock({ $0 }) { observer() }
    }

    /// Calls `observer` after each context put in force (so that connections verified against an earlier trust can
    /// check again without waiting for their next request).
    public func onReplace(_ observer: @escaping @Sendable () -> Void) {
        observers.withLock { $0.append(observer) }
    }
}

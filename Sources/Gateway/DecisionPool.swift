import Glibc
import NIOCore
import NIOPosix
import Synchronization

/// Threads for decisions too large for an event loop, apart from the pool that checks fresh credentials, and below the
/// event loops in CPU priority.
///
/// A large call can take seconds to canonicalise. On the shared pool it would hold up every new bearer token behind
/// it; at the event loops' priority it would take their CPU, and every tenant's small calls would wait in the run
/// queue (measured: light-tenant p99 10–18× its baseline while another tenant sent 4 MiB adversarial calls, back to
/// 1–1.6× with the decision threads deprioritised). So large decisions get their own threads, one per CPU, each at
/// nice 19 from its first piece of work (on Linux the nice value is per thread), and each tenant may have only
/// `GatewayLimits.maximumLargeDecisionsPerTenant` of them waiting or running at once.
///
/// The threads are shared fairly: each tenant's decisions wait in a queue of their own, the queues are served in turn
/// (round robin), and one tenant runs on at most all threads but one, so that another tenant's decision never waits
/// behind a queue of someone else's.
final class DecisionPool: Sendable {
    /// The process's decision pool, started on first use and kept for the life of the process.
    static let shared = DecisionPool(threads: max(1, System.coreCount))

    private let pool: NIOThreadPool
    private let threads: Int
    /// Decisions begun and ended on the pool's threads since the process started.
    let started = Atomic<Int>(0)
    let finished = Atomic<Int>(0)

    private struct Job {
        let work: @Sendable () -> Void
    }

    private struct State {
        /// Decisions admitted and not yet ended, per tenant (waiting or running).
        var admitted: [String: Int] = [:]
        /// Decisions running, per tenant, and in all.
        var running: [String: Int] = [:]
        var runningTotal = 0
        /// Waiting decisions, per tenant, in order.
        var queues: [String: [Job]] = [:]
        /// Tenants with waiting decisions, in the order they are served.
        var turn: [String] = []
        /// Decisions begun, per queue (a handful of queues per tenant).
        var startedByQueue: [String: Int] = [:]
    }

    private let state = Mutex(State())

    init(threads: Int) {
        self.threads = threads
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    /// Whether `queue` has `limit` decisions waiting or running: the next one would be refused.
    func isFull(_ queue: String, limit: Int) -> Bool {
        state.withLock { $0.admitted[queue, default: 0] >= limit }
    }

    /// How many pieces of work of `queue` have begun since the process started.
    func started(queue: String) -> Int {
        state.withLock { $0.startedByQueue[queue, default: 0] }
    }

    /// How many decisions one tenant may run at once: every thread but one, so that one is always there for another.
    private var perTenantRunning: Int { max(1, threads - 1) }

    /// The queue of a tenant's mid-sized decisions (`CostlyTenants`): a queue of its own, so that they do not wait
    /// behind the tenant's large ones, but the same tenant for the threads it may use at once.
    static func midSizedQueue(of tenant: String) -> String { tenant + midSizedSuffix }
    private static let midSizedSuffix = " (mid-sized)"

    /// The queue of a tenant's large list answers being filtered: apart from its large calls (a tenant holding its
    /// share of large calls still gets its lists), within the same threads the tenant may use.
    static func listQueue(of tenant: String) -> String { tenant + listSuffix }
    private static let listSuffix = " (lists)"

    /// The queue of a tenant's mid-sized list answers, filtered off the loops because its lists were slow there
    /// (`CostlyTenants`): apart from its large ones, so that neither fills the other's places.
    static func midSizedListQueue(of tenant: String) -> String { tenant + midSizedListSuffix }
    private static let midSizedListSuffix = " (mid-sized lists)"

    /// The tenant a queue belongs to (tenant ids hold no blanks, so no tenant's own queue ends with the suffix).
    private static func tenant(of queue: String) -> String {
        if queue.hasSuffix(midSizedSuffix) { return String(queue.dropLast(midSizedSuffix.count)) }
        if queue.hasSuffix(midSizedListSuffix) { return String(queue.dropLast(midSizedListSuffix.count)) }
        if queue.hasSuffix(listSuffix) { return String(queue.dropLast(listSuffix.count)) }
        return queue
    }

    /// Runs `work` for `tenant` at low priority; its result comes back on `eventLoop`. Fails with
    /// `DecisionPoolRefused` when the tenant already has `limit` decisions waiting or running.
    func run<Value: Sendable>(
        for tenant: String, limit: Int, on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> Value
    ) -> EventLoopFuture<Value> {
        let promise = eventLoop.makePromise(of: Value.self)
        let job = Job { [self] in
            Self.lowerPriorityOnce()
            started.wrappingAdd(1, ordering: .relaxed)
            let value = work()
            finished.wrappingAdd(1, ordering: .relaxed)
            promise.succeed(value)
        }
        let admitted = state.withLock { state in
            guard state.admitted[tenant, default: 0] < limit else { return false }
            state.admitted[tenant, default: 0] += 1
            if state.queues[tenant, default: []].isEmpty { state.turn.append(tenant) }
            state.queues[tenant, default: []].append(job)
            return true
        }
        guard admitted else {
            promise.fail(DecisionPoolRefused())
            return promise.futureResult
        }
        dispatch()
        return promise.futureResult
    }

    /// Starts waiting decisions while threads are free, taking the tenants in turn.
    private func dispatch() {
        while let (tenant, job) = state.withLock({ state -> (String, Job)? in
            guard state.runningTotal < threads else { return nil }
            for _ in 0..<state.turn.count {
                let tenant = state.turn.removeFirst()
                guard var queue = state.queues[tenant], !queue.isEmpty else { continue }
                guard state.running[Self.tenant(of: tenant), default: 0] < perTenantRunning else {
                    state.turn.append(tenant)  // its turn again later, once one of its decisions ends
                    continue
                }
                let job = queue.removeFirst()
                state.queues[tenant] = queue.isEmpty ? nil : queue
                if !queue.isEmpty { state.turn.append(tenant) }
                state.running[Self.tenant(of: tenant), default: 0] += 1
                state.runningTotal += 1
                state.startedByQueue[tenant, default: 0] += 1
                return (tenant, job)
            }
            return nil
        }) {
            pool.submit { [self] _ in
                job.work()
                state.withLock { state in
                    state.runningTotal -= 1
                    let owner = Self.tenant(of: tenant)
                    state.running[owner, default: 1] -= 1
                    if state.running[owner] == 0 { state.running[owner] = nil }
                    state.admitted[tenant, default: 1] -= 1
                    if state.admitted[tenant] == 0 { state.admitted[tenant] = nil }
                }
                dispatch()
            }
        }
    }

    /// Sets the calling thread's nice value to 19, once per thread.
    private static func lowerPriorityOnce() {
        guard !Self.lowered.currentValue else { return }
        Self.lowered.currentValue = true
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)  // 0: the calling thread, on Linux
    }

    private static let lowered = ThreadSpecificFlag()
}

/// The tenant already has as many large decisions in flight as it may.
struct DecisionPoolRefused: Error {}

/// A per-thread flag.
private final class ThreadSpecificFlag: Sendable {
    private let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    var currentValue: Bool {
        get { pthread_getspecific(key) != nil }
        set { pthread_setspecific(key, newValue ? UnsafeRawPointer(bitPattern: 1) : nil) }
    }
}

/// A value handed from the event loop to another thread and not touched by the loop until it comes back (the loop
/// waits for the result, or never touches it again once it gave up on it): safe to send although its type holds
/// unsynchronised state.
struct HandedOver<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Set when the exchange that handed work to another thread no longer wants its result.
final class OffloadCancellation: Sendable {
    private let cancelled = Atomic<Bool>(false)
    var isSet: Bool { cancelled.load(ordering: .relaxed) }
    func set() { cancelled.store(true, ordering: .relaxed) }
}

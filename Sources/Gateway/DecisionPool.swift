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
final class DecisionPool: Sendable {
    /// The process's decision pool, started on first use and kept for the life of the process.
    static let shared = DecisionPool(threads: max(1, System.coreCount))

    private let pool: NIOThreadPool
    private let perTenant = Mutex<[String: Int]>([:])
    /// Decisions begun and ended on the pool's threads since the process started.
    let started = Atomic<Int>(0)
    let finished = Atomic<Int>(0)

    private init(threads: Int) {
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    /// Runs `work` for `tenant` at low priority; its result comes back on `eventLoop`. Fails with
    /// `DecisionPoolRefused` when the tenant already has `limit` decisions waiting or running.
    func run<Value: Sendable>(
        for tenant: String, limit: Int, on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> Value
    ) -> EventLoopFuture<Value> {
        let admitted = perTenant.withLock { counts in
            guard counts[tenant, default: 0] < limit else { return false }
            counts[tenant, default: 0] += 1
            return true
        }
        guard admitted else { return eventLoop.makeFailedFuture(DecisionPoolRefused()) }
        let result = pool.runIfActive(eventLoop: eventLoop) { [self] in
            Self.lowerPriorityOnce()
            started.wrappingAdd(1, ordering: .relaxed)
            defer { finished.wrappingAdd(1, ordering: .relaxed) }
            return work()
        }
        result.whenComplete { [self] _ in
            perTenant.withLock { counts in
                counts[tenant, default: 1] -= 1
                if counts[tenant] == 0 { counts[tenant] = nil }
            }
        }
        return result
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

import Glibc
import Synchronization

/// Tenants whose calls recently took long to decide on an event loop. A call under the offload size is decided on
/// its connection's loop, where it delays every other connection of that loop, whatever tenant they serve; a value
/// crafted for an expensive check (the SQL detector reads about 1 ms per KiB at worst) can hold the loop for tens of
/// milliseconds. So a tenant one of whose decisions on a loop took longer than `GatewayLimits.costlyDecision` has
/// its calls from `costlyDecisionOffloadBytes` up decided off the loops for `memory`: an adversary gets one such delay
/// per tenant per `memory`, not one per call. The gateway keeps a second set for list answers: a tenant whose list
/// answer (or SSE events) took longer than that to filter on a loop has its list answers from that size up filtered
/// off the loops.
final class CostlyTenants: Sendable {
    /// How long a tenant stays marked after its last slow decision on a loop.
    static let memory = 60.0

    private let until = Mutex<[String: Double]>([:])

    /// The CPU time the calling thread has used, in nanoseconds: what a slow decision is measured in (not the wall
    /// clock: an event loop preempted meanwhile did not decide slowly).
    static func threadCPUNanoseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    /// Whether `tenant` had a slow decision on a loop within `memory` before `now` (monotonic seconds).
    func isCostly(_ tenant: String, now: Double) -> Bool {
        until.withLock { $0[tenant].map { $0 > now } ?? false }
    }

    /// Marks `tenant`: one of its decisions on a loop just took long. Returns whether it was not marked already.
    @discardableResult
    func mark(_ tenant: String, now: Double) -> Bool {
        until.withLock { until in
            let fresh = (until[tenant] ?? -.infinity) <= now
            until[tenant] = now + Self.memory
            return fresh
        }
    }
}

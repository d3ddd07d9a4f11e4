import NIOCore
import Synchronization

/// Lets a log line about one thing through at most once per interval, and says how many were held back in between:
/// failures an operator must see (an unreachable upstream, say) are logged, but never once per request.
final class LogThrottle: Sendable {
    private let interval: Double
    private let last = Mutex<[String: (at: Double, suppressed: Int)]>([:])

    /// A throttle letting one line per key through every `interval` seconds.
    init(interval: Double = 60) { self.interval = interval }

    /// Whether to log about `key` now; if so, how many lines about it were held back since the last one.
    func admit(_ key: String, now: Double = Double(NIODeadline.now().uptimeNanoseconds) / 1e9) -> Int? {
        last.withLock { last in
            if let previous = last[key], now - previous.at < interval {
                last[key] = (previous.at, previous.suppressed + 1)
                return nil
            }
            let suppressed = last[key]?.suppressed ?? 0
            if last.count > 10_000 { last.removeAll() }
            last[key] = (now, 0)
            return suppressed
        }
    }
}

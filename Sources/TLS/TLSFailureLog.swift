import NIOCore
import Synchronization

/// How often a failed handshake or connection is logged: the first of each kind (`tls.failure`) in a second, with how
/// many of that kind were held back since the last line. Found by review: a source sending a junk record on each of
/// 23,000 connections in 5 s wrote 23,000 lines (5.6 MB) to the operational log; the counters
/// (`mcpgw_tls_handshakes_total`) still count every one.
/// Kept per `TLSContext` (a listener's; a reload starts a new one).
final class TLSFailureLog: Sendable {
    private let interval: Double
    private let last = Mutex<[String: (at: Double, heldBack: Int)]>([:])

    /// A log letting one line per kind through every `interval` seconds.
    init(interval: Double = 1) { self.interval = interval }

    /// Whether a failure of `kind` is logged now; if so, how many of that kind were held back since the last line.
    func admit(_ kind: String, now: Double = Double(NIODeadline.now().uptimeNanoseconds) / 1e9) -> Int? {
        last.withLock { last in
            if let previous = last[kind], now - previous.at < interval {
                last[kind] = (previous.at, previous.heldBack + 1)
                return nil
            }
            let heldBack = last[kind]?.heldBack ?? 0
            // Kinds are few (OpenSSL's reasons, as the counters name them); bounded all the same.
            if last.count > 1_000 { last.removeAll() }
            last[kind] = (now, 0)
            return heldBack
        }
    }
}

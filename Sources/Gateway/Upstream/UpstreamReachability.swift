import Synchronization

/// Whether the gateway could last reach each upstream, for readiness: the outcome of the latest attempt to open a
/// connection, not of the calls made over it.
///
/// Two kinds of outcome are kept, each under its own key:
/// - the TCP connect, under the upstream's `UpstreamEndpoint.key` (`scheme://host:port`), shared by every tenant
///   that upstream serves: a dead upstream is dead for all of them, whether or not each has sent a call since;
/// - the TLS handshake, under `UpstreamEndpoint.connectionKey` (the upstream and the tenant), since each tenant
///   verifies the upstream with its own CAs and may present its own client certificate.
///
/// A call that was slow (no answer head in time), cut off or answered with an error says nothing here: the upstream
/// was reached. An outcome holds until the next attempt; `/readyz` starts a probe of what it finds unreachable
/// (`beginProbe`), so an upstream that comes back is seen again without any call being sent to it.
final class UpstreamReachability: Sendable {
    /// The latest attempt on one key.
    struct Outcome: Sendable, Equatable {
        /// Whether it succeeded.
        var reached: Bool
        /// What failed, for an attempt that did not succeed.
        var error: String?
        /// When the outcome last changed from reached to failed or back (monotonic seconds).
        var since: Double
        /// When the latest attempt ended (monotonic seconds).
        var attempted: Double
    }

    private struct Entry {
        /// Nil while the first attempt on the key, a probe, runs.
        var outcome: Outcome?
        var probing = false
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// Records that an attempt on `key` succeeded at `now`.
    func reached(_ key: String, at now: Double = GatewayMetrics.monotonicSeconds()) {
        record(key, error: nil, at: now)
    }

    /// Records that an attempt on `key` failed at `now`, and why.
    func failed(_ key: String, error: String, at now: Double = GatewayMetrics.monotonicSeconds()) {
        record(key, error: String(error.prefix(Self.maximumErrorCharacters)), at: now)
    }

    /// The latest outcome on `key`, if an attempt was made.
    func outcome(_ key: String) -> Outcome? { entries.withLock { $0[key]?.outcome } }

    /// Whether a probe of `key` should start now: its latest attempt failed and ended at least `interval` seconds ago
    /// (or, with `unlessTriedSince`, no attempt on it ended since that time, whatever its outcome), and no probe of it
    /// is running. When it should, it is marked as probing until `probeEnded`.
    func beginProbe(
        _ key: String, interval: Double, unlessTriedSince: Double? = nil, at now: Double = GatewayMetrics.monotonicSeconds()
    ) -> Bool {
        entries.withLock { entries in
            var entry = entries[key] ?? Entry()
            guard !entry.probing else { return false }
            if let since = unlessTriedSince {
                guard (entry.outcome?.attempted ?? -.infinity) < since else { return false }
            } else {
                guard let outcome = entry.outcome, !outcome.reached, now - outcome.attempted >= interval else { return false }
            }
            entry.probing = true
            entries[key] = entry
            return true
        }
    }

    /// Whether a probe of `key` is running.
    func isProbing(_ key: String) -> Bool { entries.withLock { $0[key]?.probing ?? false } }

    /// A probe of `key` ended (its outcome, if it got as far as one, was recorded by the connection).
    func probeEnded(_ key: String) {
        entries.withLock { $0[key]?.probing = false }
    }

    /// Error texts are kept to this many characters.
    static let maximumErrorCharacters = 240

    private func record(_ key: String, error: String?, at now: Double) {
        entries.withLock { entries in
            let reached = error == nil
            var entry = entries[key] ?? Entry()
            guard var outcome = entry.outcome else {
                entry.outcome = Outcome(reached: reached, error: error, since: now, attempted: now)
                entries[key] = entry
                return
            }
            // Never back in time: another event loop may have recorded a later attempt since `now` was read.
            guard now >= outcome.attempted else { return }
            if outcome.reached != reached { outcome.since = now }
            outcome.reached = reached
            outcome.error = error
            outcome.attempted = now
            entry.outcome = outcome
            entries[key] = entry
        }
    }
}

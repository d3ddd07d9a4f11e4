import Synchronization

/// Handshakes of the process counted by result, protocol version and reason, for metrics (a refused handshake is
/// logged at `info` only; the counts show the trend without a log line per attempt).
public final class TLSHandshakeCounters: Sendable {
    /// One counted kind of handshake.
    public struct Key: Hashable, Sendable {
        /// `success` or `failure`.
        public let result: String
        /// `TLSv1.3`, `TLSv1.2`, or `unknown` when the handshake failed before a version was chosen.
        public let version: String
        /// Why it failed (`certificate_refused`, `protocol_version`, `timeout`, `closed`, `other`), or `resumed` /
        /// `full` for successes.
        public let reason: String
    }

    /// The process's counters.
    public static let shared = TLSHandshakeCounters()

    private let counts = Mutex<[Key: Int]>([:])

    /// Adds one.
    func record(result: String, version: String, reason: String) {
        counts.withLock { $0[Key(result: result, version: version, reason: reason), default: 0] += 1 }
    }

    /// Every count so far.
    public func snapshot() -> [Key: Int] { counts.withLock { $0 } }

    /// The failures counted with `reason`, over all versions.
    public func failures(reason: String) -> Int {
        snapshot().filter { $0.key.result == "failure" && $0.key.reason == reason }.values.reduce(0, +)
    }

    /// The reason class of a failed handshake.
    static func reason(_ error: TLSError) -> String {
        switch error {
        case .handshakeTimedOut: return "timeout"
        case .closedDuringHandshake: return "closed"
        case .handshakeFailed(let reason, let verifyError, _):
            if verifyError != nil || reason.contains("certificate") { return "certificate_refused" }
            if reason.contains("protocol") || reason.contains("version") { return "protocol_version" }
            return "other"
        default: return "other"
        }
    }
}

/// A TLS failure, with OpenSSL's own reasons attached so that an operator can tell what went wrong.
public enum TLSError: Error, Sendable, CustomStringConvertible {
    /// The configuration could not be turned into an OpenSSL context (unreadable file, key mismatch, bad cipher list...).
    case invalidConfiguration(String, openSSL: [OpenSSLError])
    /// The handshake failed. `reason` is a sentence for the log; `verifyError` is set when the peer's certificate was refused.
    case handshakeFailed(reason: String, verifyError: String?, openSSL: [OpenSSLError])
    /// The handshake did not finish within the configured time.
    case handshakeTimedOut(seconds: Int64)
    /// The TCP connection ended before the handshake completed.
    case closedDuringHandshake
    /// Reading or writing application data failed after the handshake.
    case connectionFailed(String, openSSL: [OpenSSLError])
    /// The server's side of the connection ended without a TLS close_notify: whatever it was sending may have been
    /// cut short by anyone on the path (a forged TCP FIN), so data whose end is the connection's end is not complete.
    case uncleanShutdown

    public var description: String {
        switch self {
        case .invalidConfiguration(let what, let errors):
            return "invalid TLS configuration: \(what)\(Self.suffix(errors))"
        case .handshakeFailed(let reason, _, let errors):
            return "TLS handshake failed: \(reason)\(Self.suffix(errors))"
        case .handshakeTimedOut(let seconds):
            return "TLS handshake did not complete within \(seconds) s"
        case .closedDuringHandshake:
            return "connection closed during the TLS handshake"
        case .connectionFailed(let what, let errors):
            return "TLS connection failed: \(what)\(Self.suffix(errors))"
        case .uncleanShutdown:
            return "TLS connection closed by the peer without close_notify (possibly truncated)"
        }
    }

    private static func suffix(_ errors: [OpenSSLError]) -> String {
        errors.isEmpty ? "" : " [" + errors.map(\.reason).joined(separator: "; ") + "]"
    }
}

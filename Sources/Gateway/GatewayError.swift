/// Why the gateway could not start, or did not stop cleanly.
public enum GatewayError: Error, Sendable, CustomStringConvertible {
    /// Plain HTTP was configured without explicitly accepting that it is insecure.
    case plainHTTPNotAllowed
    /// The listener could not bind.
    case cannotListen(ListenAddress, reason: String)
    /// On shutdown, the audit log could not write everything it had accepted.
    case auditRecordsLost(bytes: Int)

    public var description: String {
        switch self {
        case .plainHTTPNotAllowed:
            return "no TLS configured: plain HTTP must be enabled explicitly (--insecure-plain-http)"
        case .cannotListen(let address, let reason):
            return "cannot listen on \(address): \(reason)"
        case .auditRecordsLost(let bytes):
            return "the audit log could not write \(bytes) bytes of records before shutdown"
        }
    }
}

/// Why the gateway could not start.
public enum GatewayError: Error, Sendable, CustomStringConvertible {
    /// Plain HTTP was configured without explicitly accepting that it is insecure.
    case plainHTTPNotAllowed
    /// The listener could not bind.
    case cannotListen(ListenAddress, reason: String)

    public var description: String {
        switch self {
        case .plainHTTPNotAllowed:
            return "no TLS configured: plain HTTP must be enabled explicitly (--insecure-plain-http)"
        case .cannotListen(let address, let reason):
            return "cannot listen on \(address): \(reason)"
        }
    }
}

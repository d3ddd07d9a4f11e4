public import NIOCore

extension SocketAddress {
    /// `127.0.0.1:8443` or `[::1]:8443` — the form operators expect in logs and audit records.
    public var hostAndPort: String {
        guard let ip = ipAddress, let port else { return "\(self)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

import NIOCore

/// The source a client counts against for per-source shares (connections, introspections): an IPv4 address, or an
/// IPv6 address's /64 network. One host (or one customer of a hosting provider) is usually given a whole /64, so
/// counting IPv6 addresses one by one would give one client as many shares as it has addresses. An IPv4 address seen
/// on an IPv6 socket (`::ffff:a.b.c.d`) counts as that IPv4 address.
enum ClientSource {
    /// The source key of `address`; "unknown" without one (a Unix socket).
    static func key(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        guard case .v6(let v6) = address else { return address.ipAddress ?? "unknown" }
        let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return "\(bytes[12]).\(bytes[13]).\(bytes[14]).\(bytes[15])"
        }
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return groups.joined(separator: ":") + "::/64"
    }
}

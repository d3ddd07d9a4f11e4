import NIOCore
import Testing

@testable import Gateway

/// What counts as one client source for per-source shares (connections, introspections in flight).
@Suite("Client sources")
struct ClientSourceTests {
    @Test(
        "an IPv4 address is its own source; an IPv6 address counts as its /64; an IPv4-mapped IPv6 address as its IPv4 address",
        arguments: [
            ("192.0.2.7", "192.0.2.7"), ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:ffff:1:2:3", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"), ("::ffff:192.0.2.7", "192.0.2.7"), ("::1", "0:0:0:0::/64"),
        ])
    func sourceKey(address: String, source: String) throws {
        #expect(ClientSource.key(try SocketAddress(ipAddress: address, port: 443)) == source)
    }
}

import NIOCore
import NIOPosix
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

    @Test("one source holds at most an eighth of the work off the loops (fresh signature checks); another source still gets its turn")
    func offloadSharePerSource() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let services = gateway.services
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let share = GatewayServices.maximumOffloadedPerSource
        // As if `share` tokens with made-up signatures of one source were waiting for the signature threads.
        for _ in 0..<share {
            #expect(services.offloaded.enter(source: "192.0.2.7", limit: GatewayServices.maximumOffloaded, perSource: share))
        }
        // Found by review: every fresh check went into one queue of 512, and one source could fill it.
        await #expect(throws: OffloadRefused.self) { try await services.offload(on: loop, source: "192.0.2.7") { 1 }.get() }
        #expect(try await services.offload(on: loop, source: "198.51.100.1") { 2 }.get() == 2)
        for _ in 0..<share { services.offloaded.leave(source: "192.0.2.7") }
        #expect(try await services.offload(on: loop, source: "192.0.2.7") { 3 }.get() == 3)
        #expect(services.offloaded.inFlight(source: "192.0.2.7") == 0)
        try await gateway.stop()
        await upstream.stop()
    }
}

import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// Answers the gateway holds whole (lists collected to filter them) count against their tenant's share of held bytes,
/// until their client has taken them.
@Suite("Answers held whole", .serialized)
struct HeldResponseBytesTests {
    /// An upstream whose tool list is about 4 MB.
    static let bigList: RecordingUpstream.Behaviour = .custom { request in
        let id = (try? JSONParser.parse(request.body))?.objectValue?["id"]?.serialized ?? "null"
        let description = String(repeating: "d", count: 4_000_000)
        return (
            "application/json",
            #"{"jsonrpc":"2.0","id":\#(id),"result":{"tools":[{"name":"read_file","description":"\#(description)","inputSchema":{}}]}}"#
        )
    }

    @Test(
        "a client that does not read its list holds the list's bytes in its tenant's share: the tenant's next list is refused (503, recorded), another tenant's is served, and the share comes back when the client goes"
    )
    func nonReadingClientHoldsItsTenantsShare() async throws {
        var limits = GatewayLimits()
        limits.maximumHeldResponseBytesPerTenant = 6_000_000
        // Filtered on the loop: this is about the bytes held, not where the filtering runs.
        limits.offloadListBytes = .max
        let upstream = try await RecordingUpstream.start(Self.bigList)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let held = gateway.services.upstream.heldBytes
        let list = #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        let stalled = try await RawTLSClient.connect(port: gateway.port)
        // A first exchange completes the handshake; then the client stops reading.
        try await stalled.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        #expect(await stalled.wait { $0.contains(#""status":"ok""#) })
        try await stalled.setReading(false)
        try await stalled.send(RawTLSClient.post(list))
        #expect(try await eventually { held.total >= 4_000_000 }, "the stalled client's answer is not held")

        let refused = try await gateway.client().send(body: list)
        #expect(refused.status == 503, "\(refused.body.prefix(300))")
        let other = try await gateway.client("globex/agents/bot1").send(body: list)
        #expect(other.status == 200)

        await stalled.close()
        #expect(try await eventually { held.total == 0 }, "the share did not come back: \(held.total)")
        #expect(try await gateway.client().send(body: list).status == 200)
        let records = try gateway.auditRecords()
        #expect(
            records.contains {
                $0["tenant"] == .string("acme") && $0["upstream_status"] == .number(.init(503))
                    && ($0["reason"]?.stringValue ?? "").contains("reached their bound")
            })
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an SSE event the upstream leaves unfinished may hold at most its tenant's share: beyond, the stream ends, recorded")
    func unfinishedEventBeyondTheShare() async throws {
        var limits = GatewayLimits()
        limits.maximumHeldResponseBytesPerTenant = 1_000_000
        let event = "data: " + String(repeating: "x", count: 2_000_000)
        let upstream = try await RecordingUpstream.start(.custom { _ in ("text/event-stream", event) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let response = try? await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#))
        #expect(response?.body.contains("xxxx") != true)
        #expect(try await eventually { gateway.services.upstream.heldBytes.total == 0 })
        let records = try gateway.auditRecords()
        #expect(records.contains { $0["rule"] == .string("held_response_bytes") }, "\(records)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a large SSE event written to a client that does not read counts in its tenant's share until it is written out")
    func writtenEventHeldUntilTaken() async throws {
        let event = "data: " + String(repeating: "x", count: 15_000_000) + "\n\n"
        let upstream = try await RecordingUpstream.start(.gatedEvents(first: event, afterRelease: "data: {}\n\n"))
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let held = gateway.services.upstream.heldBytes
        let stalled = try await RawTLSClient.connect(port: gateway.port)
        try await stalled.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        #expect(await stalled.wait { $0.contains(#""status":"ok""#) })
        try await stalled.setReading(false)
        try await stalled.send(RawTLSClient.post(RPC.call("read_file", #"{"path":"a.txt"}"#)))
        // The kernel takes some megabytes of it; the rest stays in the gateway's output, and so does the charge.
        #expect(try await eventually { held.total >= 15_000_000 }, "the written event is not counted: \(held.total)")
        await stalled.close()
        #expect(try await eventually { held.total == 0 }, "the share did not come back: \(held.total)")
        upstream.release()
        try await gateway.stop()
        await upstream.stop()
    }
}

import NIOCore
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// Clients that do not take what the gateway has for them, and answers whose type clients read differently.
@Suite("Slow readers, listening budgets and answer types", .serialized)
struct SlowReaderTests {
    @Test("a client that reads none of a large answer for the idle timeout is cut: its request, upstream connection and budgets go")
    func slowReaderCut() async throws {
        // 16 MiB of JSON: far more than the socket buffers between the gateway and a client that does not read.
        let result = String(repeating: "x", count: 16 * 1024 * 1024)
        let upstream = try await RawUpstream.start { request in
            let id = RequestPathTests.id(in: request)
            let body =
                #"{"jsonrpc":"2.0","id":\#(id),"result":{"content":[{"type":"text","text":"\#(request.contains("small") ? "ok" : result)"}]}}"#
            return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        }
        var limits = GatewayLimits()
        limits.maximumRequestsPerTenant = 1
        // 5 s: shorter, a loaded machine was slower than that to get the clients below connected and sending (at 3 s,
        // "I/O on closed channel" in a full parallel run, 2026-11-29).
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits) { $0.idleTimeout = .seconds(5) }
        // The handshake needs reading: a small call and the large one in one write (pipelined, so that nothing is sent
        // once the client stops reading); it stops reading as the small answer arrives, on its own loop (a test task,
        // on a loaded machine, once got there after the client had read all 16 MiB). A client cut before it could send
        // (the idle timeout passed during its handshake) is replaced, three times at most: nothing of it is in flight.
        var connected: RawTLSClient?
        for _ in 0..<3 where connected == nil {
            let client = try await RawTLSClient.connect(port: gateway.port)
            client.stopReading(whenReceived: #""id":9,"result""#)
            let sent: Void? = try? await client.send(
                RawTLSClient.post(RPC.call("read_file", #"{"path":"small.txt"}"#, id: 9))
                    + RawTLSClient.post(RPC.call("read_file", #"{"path":"big.txt"}"#, id: 1)))
            if sent != nil, await client.wait(until: { $0.contains(#""id":9,"result""#) }) {
                connected = client
            } else {
                await client.close()
            }
        }
        let stalled = try #require(connected, "no client got as far as its first answer")
        // Found in review: the stalled reader held its request (and its tenant's budget) for good.
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline, try !gateway.auditRecords().contains(where: { $0["rule"] == .string("slow_reader") }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let records = try gateway.auditRecords()
        let record = try #require(
            records.first { $0["rule"] == .string("slow_reader") },
            "records: \(records.map { "\($0["decision"]?.stringValue ?? "-")/\($0["rule"]?.stringValue ?? "-")/\($0["upstream_status"]?.serialized ?? "-")" }), client read \(stalled.receivedCount) bytes, closed \(stalled.isClosed)"
        )
        #expect(record["method"] == .string("tools/call") && record["target"] == .string("read_file"), "\(record)")
        #expect(record["agent"] == .string("bot1"))
        let closed = ContinuousClock.now + .seconds(5)
        while upstream.closes.withLockedValue({ $0.isEmpty }) && ContinuousClock.now < closed {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!upstream.closes.withLockedValue { $0.isEmpty }, "the upstream connection was not closed")
        // The tenant's one request in flight is free again: another agent is served. (A new connection may be cut by
        // the 3 s idle timeout before its handshake ends on a loaded CI machine: "I/O on closed channel" in two clean-
        // clone runs. A connection that closes before its answer is tried again, three times at most.)
        var served = false
        var seen = ""
        for _ in 0..<3 where !served {
            let other = try await RawTLSClient.connect(port: gateway.port, agent: "acme/agents/bot2")
            try? await other.send(RawTLSClient.post(RPC.call("read_file", #"{"path":"small.txt"}"#, id: 2)))
            served = await other.wait { $0.contains(#""id":2,"result""#) }
            seen = String(other.text.prefix(300))
            await other.close()
        }
        #expect(served, "\(seen)")
        await stalled.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a client that reads a large answer at a trickle, slower than the minimum answer rate, is cut and recorded")
    func trickleReaderCut() async throws {
        let result = String(repeating: "x", count: 16 * 1024 * 1024)
        let upstream = try await RawUpstream.start { request in
            let id = RequestPathTests.id(in: request)
            let body = #"{"jsonrpc":"2.0","id":\#(id),"result":{"content":[{"type":"text","text":"\#(result)"}]}}"#
            return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        }
        var limits = GatewayLimits()
        // A rate no trickle below reaches; the idle timeout (60 s) never passes: the client reads every 300 ms.
        limits.minimumAnswerBytesPerSecond = 8 * 1024 * 1024
        limits.answerRateWindow = .seconds(1)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let reader = try await RawTLSClient.connect(port: gateway.port)
        reader.stopReading(whenReceived: "HTTP/1.1 200")
        try await reader.send(RawTLSClient.post(RPC.call("read_file", #"{"path":"big.txt"}"#, id: 1)))
        var cut = false
        let deadline = ContinuousClock.now + .seconds(15)
        while !cut && ContinuousClock.now < deadline && !reader.isClosed {
            // A trickle: one socket read every 300 ms (a few hundred KiB at most, whatever the machine's load; found in
            // CI: toggling reading on for "2 ms" read for much longer on a loaded machine, fast enough not to be cut).
            reader.channel.read()
            try await Task.sleep(for: .milliseconds(300))
            cut = try gateway.auditRecords().contains { $0["rule"] == .string("slow_reader") }
        }
        // Found by review (and left until now): such a reader was never cut, holding its request and budgets.
        let record = try #require(try gateway.auditRecords().first { $0["rule"] == .string("slow_reader") })
        #expect(record["reason"]?.stringValue?.contains("slower than") == true, "\(record)")
        #expect(reader.receivedCount < 16 * 1024 * 1024)
        await reader.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("one agent holds at most its share of the tenant's requests in flight (half by default): a sibling is still served")
    func agentRequestShare() async throws {
        let upstream = try await RecordingUpstream.start(.routed { request in request.body.contains("hang.txt") ? .hang : .json })
        var limits = GatewayLimits()
        limits.maximumRequestsPerTenant = 4
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        // bot1's two calls that never end hold its share (2 of 4).
        var held: [RawTLSClient] = []
        for id in 1...2 {
            let client = try await RawTLSClient.connect(port: gateway.port)
            try await client.send(RawTLSClient.post(RPC.call("read_file", #"{"path":"hang.txt"}"#, id: id)))
            held.append(client)
        }
        let arrived = ContinuousClock.now + .seconds(10)
        while upstream.received.count < 2 && ContinuousClock.now < arrived { try await Task.sleep(for: .milliseconds(10)) }
        let third = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 3))
        #expect(third.status == 503, "\(third.status) \(third.body)")
        #expect(third.body.contains("too many requests in flight for this agent"), "\(third.body)")
        // Found in review: one agent's stalled calls held its tenant's whole budget, and its siblings got 503.
        let sibling = try await gateway.client("acme/agents/bot2").send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 4))
        #expect(sibling.status == 200, "\(sibling.status) \(sibling.body)")
        #expect(try gateway.auditRecords().contains { $0["rule"] == .string("agent_request_budget") })
        for client in held { await client.close() }
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "a client that reads none of its answers gets no more once its socket is full: the requests behind wait, and past 64 the connection closes"
    )
    func pipelinedAnswersBounded() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let client = try await RawTLSClient.connect(port: gateway.port)
        try await client.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        #expect(await client.wait { $0.contains(#""status":"ok""#) })
        try await client.setReading(false)
        // Found in review: answers given at once (here /healthz, there 401s) were written for every request of every
        // read, whether or not the client took them: 10,000 answers and 1.8 MB held per connection.
        let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        try? await client.send(String(repeating: request, count: 60_000))
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline, try !gateway.auditRecords().contains(where: { $0["rule"] == .string("pipeline_depth") }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try gateway.auditRecords().contains { $0["rule"] == .string("pipeline_depth") })
        await client.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("16 unauthenticated refusals in a row close the connection with the last; an authenticated request resets the count")
    func unauthenticatedRefusalsCloseTheConnection() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let anonymous = try await RawTLSClient.connect(port: gateway.port, agent: nil)
        let refused = RawTLSClient.post(RPC.call("read_file", #"{"path":"a.txt"}"#, id: 1))
        // Found in review: each 21-byte refused request cost a 330-byte audit record, without end, on one connection.
        try await anonymous.send(String(repeating: refused, count: 20))
        #expect(await anonymous.waitForClose(), "the connection stayed open")
        #expect(statusLines(anonymous.text).count == MCPConnectionHandler.maximumUnauthenticatedAnswers, "\(statusLines(anonymous.text))")
        #expect(try gateway.auditRecords().filter { $0["decision"] == .string("authentication_failed") }.count == 16)
        // A client that authenticates in between keeps its connection.
        let token = try GatewayFixture.token(lifetime: 600)
        let mixed = try await RawTLSClient.connect(port: gateway.port, agent: nil)
        let authorized = RawTLSClient.post(
            RPC.call("read_file", #"{"path":"a.txt"}"#, id: 2), headers: [("Authorization", "Bearer \(token)")])
        try await mixed.send(String(repeating: refused, count: 10) + authorized + String(repeating: refused, count: 10))
        #expect(await mixed.wait { statusLines($0).count == 21 }, "\(statusLines(mixed.text))")
        #expect(!mixed.isClosed)
        await anonymous.close()
        await mixed.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("the gateway's own large answer to a client that does not read counts in its tenant's held bytes until taken")
    func largeRefusalHeld() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        var limits = GatewayLimits()
        limits.maximumBodyBytes = 16 * 1024 * 1024
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let client = try await RawTLSClient.connect(port: gateway.port)
        // Denied calls, each under an id of 1.5 MB: the batch's error answer echoes every id, 12 MB in all, far more
        // than the sockets between the gateway and a client that stopped reading take.
        let id = String(repeating: "i", count: 1_500_000)
        let batch =
            "["
            + (1...8).map { #"{"jsonrpc":"2.0","id":"\#(id)\#($0)","method":"tools/call","params":{"name":"delete_file","arguments":{}}}"# }
            .joined(separator: ",") + "]"
        client.stopReading(whenReceived: "HTTP/1.1 ")
        try await client.send(RawTLSClient.post(batch, headers: [("MCP-Protocol-Version", "2025-03-26")]))
        // The client has stopped reading (after the answer's first bytes), and the rest stays with the gateway.
        let stopped = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < stopped, client.receivedCount == 0 { try await Task.sleep(for: .milliseconds(50)) }
        try await Task.sleep(for: .milliseconds(500))
        // Found by review: the answer was held by the gateway, uncounted, for as long as the client did not read.
        #expect(gateway.services.upstream.heldBytes.total >= 12_000_000, "\(gateway.services.upstream.heldBytes.total)")
        #expect(upstream.received.isEmpty)
        try await client.setReading(true)
        // (Counted, not searched: a 1.5 MB needle in 12 MB of text takes Foundation minutes.)
        let read = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < read, client.receivedCount < 12_000_000 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(client.receivedCount >= 12_000_000, "\(client.receivedCount) closed \(client.isClosed) \(client.text.prefix(300))")
        let released = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < released, gateway.services.upstream.heldBytes.total > 0 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(gateway.services.upstream.heldBytes.total == 0)
        await client.close()
        try await gateway.stop()

        // Within the tenant's share: an answer larger than what the tenant may hold is replaced by a short 503 (found
        // by review: counted regardless of the share, such answers took the room of every other tenant's answers).
        limits.maximumHeldResponseBytesPerTenant = 8 * 1024 * 1024
        let small = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let refused = try await RawTLSClient.connect(port: small.port)
        try await refused.send(RawTLSClient.post(batch, headers: [("MCP-Protocol-Version", "2025-03-26")]))
        #expect(
            await refused.wait(timeout: .seconds(20)) { $0.contains("this tenant's answers not yet read") }, "\(refused.text.prefix(300))")
        #expect(statusLines(refused.text) == ["HTTP/1.1 503"])
        #expect(small.services.upstream.heldBytes.total == 0)
        // The decision is recorded all the same: one record per denied call.
        #expect(try small.auditRecords().filter { $0["decision"] == .string("deny") }.count == 8)
        await refused.close()
        try await small.stop()
        await upstream.stop()
    }

    @Test("a quiet answer a client keeps reading is not cut at the idle timeout")
    func quietStreamKept() async throws {
        let upstream = try await RecordingUpstream.start(.gatedStream)
        let gateway = try await GatewayFixture.start(upstream: upstream.url) { $0.idleTimeout = .seconds(1) }
        let client = try await RawTLSClient.connect(port: gateway.port)
        try await client.send(RawTLSClient.post(RPC.call("read_file", #"{"path":"a.txt"}"#, id: 1)))
        #expect(await client.wait { $0.contains("progress") })
        try await Task.sleep(for: .milliseconds(2500))
        #expect(!client.isClosed)
        upstream.release()
        #expect(await client.wait { $0.contains(#""done":true"#) })
        #expect(try !gateway.auditRecords().contains { $0["rule"] == .string("slow_reader") })
        await client.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("subscriptions/listen streams count against the agent's and the tenant's stream budgets, like GET streams")
    func listenStreamsBudgeted() async throws {
        let upstream = try await RecordingUpstream.start(.gatedStream)
        var limits = GatewayLimits()
        limits.maximumStreamsPerAgent = 1
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let listen = ProtocolCompletenessTests.listen("[]")
        let first = try await RawTLSClient.connect(port: gateway.port)
        try await first.send(RawTLSClient.post(listen.body, headers: listen.headers))
        #expect(await first.wait { $0.contains("HTTP/1.1 200") && $0.contains("progress") }, "\(first.text)")
        // Found in review: six listens of one agent were all relayed, past a budget of two.
        let second = try await RawTLSClient.connect(port: gateway.port)
        try await second.send(RawTLSClient.post(listen.body, headers: listen.headers))
        #expect(await second.wait { $0.contains("HTTP/1.1 429") }, "\(second.text)")
        #expect(second.text.contains("too many open streams for this agent"))
        #expect(upstream.received.count == 1)
        upstream.release()
        await first.close()
        await second.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an answer's type is read as its media type: SSE is told as text/event-stream, a value naming it elsewhere is refused")
    func answerTypes() async throws {
        let event = #"data: {"jsonrpc":"2.0","id":1,"result":{"content":[]}}"# + "\n\n"
        let upstream = try await RecordingUpstream.start(
            .custom { request in
                if request.body.contains("profile.txt") { return (#"application/json; profile="text/event-stream""#, event) }
                if request.body.contains("upper.txt") { return ("Text/Event-Stream ; charset=utf-8", event) }
                return ("text/event-streams", event)
            })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        func call(_ path: String) async throws -> TestHTTPClient.Response {
            try await gateway.client().send(body: RPC.call("read_file", #"{"path":"\#(path)"}"#, id: 1))
        }
        // Found in review: the TypeScript SDK reads the first as SSE (it looks for text/event-stream anywhere), and
        // the gateway relayed it unfiltered.
        let profile = try await call("profile.txt")
        #expect(profile.status == 502, "\(profile.status) \(profile.body)")
        let almost = try await call("other.txt")
        #expect(almost.status == 502, "\(almost.status) \(almost.body)")
        let upper = try await call("upper.txt")
        #expect(upper.status == 200)
        #expect(upper.header("content-type") == "text/event-stream", "\(upper.headers)")
        #expect(upper.body.contains(#""result""#))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("AnswerMediaType reads the media type before any parameter, in any case")
    func mediaTypes() {
        #expect(AnswerMediaType("text/event-stream") == .eventStream)
        #expect(AnswerMediaType(" TEXT/EVENT-STREAM ;charset=utf-8") == .eventStream)
        #expect(AnswerMediaType("application/json") == .other)
        #expect(AnswerMediaType(nil) == .other)
        #expect(
            AnswerMediaType(#"application/json; profile="text/event-stream""#)
                == .ambiguous(#"application/json; profile="text/event-stream""#))
        #expect(AnswerMediaType("text/event-stream2") == .ambiguous("text/event-stream2"))
    }

    @Test("a stream starting with a byte-order mark, or its bytes encoded twice (ï»¿), is read and relayed without it")
    func byteOrderMarks() throws {
        // Found in review: `eventsource-parser` (the TypeScript SDK's) strips the second from its first chunk, so the
        // gateway read `ï»¿data:` as an unknown field while that client dispatched the event.
        // A real mark and then the twice-encoded one: the decoder drops the first, the parser the second.
        for mark: [UInt8] in [
            [0xEF, 0xBB, 0xBF], [0xC3, 0xAF, 0xC2, 0xBB, 0xC2, 0xBF], [0xEF, 0xBB, 0xBF, 0xC3, 0xAF, 0xC2, 0xBB, 0xC2, 0xBF],
        ] {
            var filter = SSEEventFilter(filter: nil, maximumEventBytes: 1 << 20)
            // Arriving a byte at a time: no decision before the mark is whole.
            var relayed: [UInt8] = []
            for byte in mark + Array("data: x\n\n".utf8) { relayed += try filter.feed(ByteBuffer(bytes: [byte])) }
            #expect(relayed == Array("data: x\n\n".utf8), "\(mark)")
        }
        var plain = SSEEventFilter(filter: nil, maximumEventBytes: 1 << 20)
        #expect(try plain.feed(ByteBuffer(string: "\u{C3}x: y\n\n")) == Array("\u{C3}x: y\n\n".utf8))
    }
}

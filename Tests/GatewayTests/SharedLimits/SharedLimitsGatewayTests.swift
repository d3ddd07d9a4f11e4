import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Redis
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// Shared rate limits through the gateway's own request path, with a real `redis-server`.
@Suite struct SharedLimitsGatewayTests {
    /// acme may call read_file and list_files; G is shared per agent and tool, L is local per agent with a burst of 3.
    static func policies() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-shared-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory + "/acme", withIntermediateDirectories: true)
        let document = #"""
            {"name": "limits", "rules": [{"id": "R", "action": "allow", "tools": ["read_file", "list_files"]}],
             "rate_limits": [{"id": "G", "rate_per_second": 100, "burst": 100, "per": "agent+tool"},
                             {"id": "L", "rate_per_second": 0.001, "burst": 3, "per": "agent", "scope": "local"}]}
            """#
        try Data(document.utf8).write(to: URL(fileURLWithPath: directory + "/acme/limits.json"))
        return directory
    }

    static func settings(_ url: String, mode: SharedLimitFailureMode = .failClosed) throws -> SharedLimitSettings {
        var redis = try RedisSettings(url: url)
        redis.commandTimeout = .seconds(2)
        var settings = SharedLimitSettings(redis: redis)
        settings.defaultFailureMode = mode
        return settings
    }

    /// A batch whose second call needs a lease that is not on hand is decided again as a whole once it is fetched —
    /// and the first call's tokens, taken in the abandoned attempt, are given back, not counted twice.
    @Test func aBatchWaitingForALeaseIsCountedOnce() async throws {
        let server = try await RedisServer()
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(
            upstream: upstream.url, policies: try Self.policies(), sharedLimits: try Self.settings(server.url))
        let client = gateway.client()
        // read_file's lease is fetched now (the call waits for it); L has 2 tokens left.
        #expect(try await client.send(body: RPC.call("read_file", #"{"path":"a"}"#)).status == 200)
        // list_files has no lease yet: the batch is decided twice. Counted once, L has exactly 2 tokens for it.
        let batch = "[\(RPC.call("read_file", #"{"path":"b"}"#, id: 2)),\(RPC.call("list_files", "{}", id: 3))]"
        let answer = try await client.send(body: batch)
        #expect(answer.status == 200)
        #expect(!answer.body.contains("-3100"), "\(answer.body)")
        #expect(upstream.received.count == 2)
        // L is now spent: the next call is refused by it, with 429.
        let refused = try await client.send(body: RPC.call("read_file", #"{"path":"c"}"#, id: 4))
        #expect(refused.status == 429)
        let records = try gateway.auditRecords()
        #expect(records.map { $0["decision"]?.stringValue } == ["allow", "allow", "allow", "rate_limited"])
        #expect(records.last?["rule"]?.stringValue == "L")
        #expect(records.allSatisfy { $0["shared_limits"] == nil })
        try await gateway.stop()
        await upstream.stop()
    }

    /// A batch whose client leaves while it waits for a lease (from a Redis that takes connections and then never
    /// answers a command) leaves one record per message, each with its method, target and id, as a decided batch would.
    @Test func aBatchAbandonedWhileWaitingIsRecordedPerMessage() async throws {
        let heard = NIOLockedValueBox("")
        let deaf = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Listening(heard: heard)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { deaf.close(promise: nil) }
        let upstream = try await RecordingUpstream.start(.json)
        // The lease must still be awaited when the client leaves, however loaded the machine: long deadlines for the
        // connection (its PING is answered) and for the lease request (never answered). With the default 2 s connect
        // deadline and a Redis that answered nothing, a loaded CI machine's gateway had given up, and answered 503,
        // before the test got to closing (four CI failures).
        var settings = try Self.settings("redis://127.0.0.1:\(deaf.localAddress!.port!)")
        settings.redis.connectTimeout = .seconds(40)
        settings.redis.commandTimeout = .seconds(40)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, policies: try Self.policies(), sharedLimits: settings)
        let client = try await RawTLSClient.connect(port: gateway.port)
        let batch = "[\(RPC.call("read_file", #"{"path":"b"}"#, id: 2)),\(RPC.call("list_files", "{}", id: 3))]"
        try await client.send(RawTLSClient.post(batch))
        // The client leaves once the gateway waits for its lease (Redis has heard the lease request), not after a
        // fixed time.
        for _ in 0..<1200 where !heard.withLockedValue({ $0.contains("EVALSHA") }) { try await Task.sleep(for: .milliseconds(25)) }
        await client.close()
        var abandoned: [JSONObject] = []
        for _ in 0..<400 where abandoned.count < 2 {
            try await Task.sleep(for: .milliseconds(50))
            abandoned = try gateway.auditRecords().filter { $0["rule"] == .string("abandoned") }
        }
        // What the gateway recorded and what the deaf Redis heard, should this fail.
        let context = "records: \((try? gateway.auditRecords()) ?? []); Redis heard: \(heard.withLockedValue { $0 })"
        #expect(abandoned.map { $0["target"]?.stringValue } == ["read_file", "list_files"], "\(context)")
        #expect(abandoned.map { $0["jsonrpc_id"] } == [.number(JSONNumber(2)), .number(JSONNumber(3))])
        #expect(abandoned.allSatisfy { $0["reason"]?.stringValue?.contains("shared rate-limit lease") == true })
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    /// A batch refused for one of its calls counts none of them against any limit (local ones here, without Redis).
    /// A policy allowing every tool, with one shared limit.
    static func policies(limit: String) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-shared-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory + "/acme", withIntermediateDirectories: true)
        let document = #"{"name": "limits", "rules": [{"id": "R", "action": "allow", "tools": ["*"]}], "rate_limits": [\#(limit)]}"#
        try Data(document.utf8).write(to: URL(fileURLWithPath: directory + "/acme/limits.json"))
        return directory
    }

    /// Batches well inside their shared limits are admitted whole (found by review): ten calls on one bucket whose
    /// lease is a single token (each attempt used to fetch one more token, and the batch ran out of attempts), and
    /// ten calls on ten buckets new to this replica (each attempt used to ask for one message's bucket only).
    @Test(arguments: [
        (#"{"id": "S", "rate_per_second": 20, "burst": 20, "per": "agent"}"#, false),
        (#"{"id": "S", "rate_per_second": 1000, "burst": 1000, "per": "agent+tool"}"#, true),
    ])
    func aBatchWithinItsSharedLimitsIsAdmitted(limit: String, manyTools: Bool) async throws {
        let server = try await RedisServer()
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(
            upstream: upstream.url, policies: try Self.policies(limit: limit), sharedLimits: try Self.settings(server.url))
        let client = gateway.client()
        // A first call leaves the replica a lease with a token on hand (refilled after the call): the batch's first
        // attempt then takes it and finds nothing for the others.
        #expect(try await client.send(body: RPC.call("read_file", #"{"path":"a"}"#, id: 0)).status == 200)
        try await Task.sleep(for: .milliseconds(300))
        let calls = (1...10).map { RPC.call(manyTools ? "tool_\($0)" : "read_file", #"{"path":"a"}"#, id: $0) }
        let answer = try await client.send(body: "[\(calls.joined(separator: ","))]")
        #expect(answer.status == 200, "\(answer.body)")
        #expect(!answer.body.contains("-3100"), "\(answer.body)")
        #expect(upstream.received.count == 2)
        let records = try gateway.auditRecords()
        #expect(records.count == 11 && records.allSatisfy { $0["decision"]?.stringValue == "allow" }, "\(records)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test func aRefusedBatchCountsNothing() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, policies: try Self.policies())
        let client = gateway.client()
        let batch = "[\(RPC.call("read_file", #"{"path":"a"}"#, id: 1)),\(RPC.call("delete_file", "{}", id: 2))]"
        #expect(try await client.send(body: batch).body.contains("-31001"))
        // L (burst 3 per agent) still has all three tokens.
        for id in 3...5 { #expect(try await client.send(body: RPC.call("read_file", #"{"path":"a"}"#, id: id)).status == 200) }
        #expect(try await client.send(body: RPC.call("read_file", #"{"path":"a"}"#, id: 6)).status == 429)
        #expect(upstream.received.count == 3)
        try await gateway.stop()
        await upstream.stop()
    }

    /// Redis out of reach: a fail_closed tenant's calls get 503 with the gateway's code and an audit record saying
    /// why; a local_fallback tenant's calls go on under the local share, and their records say so.
    @Test(arguments: [SharedLimitFailureMode.failClosed, .localFallback])
    func redisOutOfReach(mode: SharedLimitFailureMode) async throws {
        // Bound and not listening for the whole test: a port merely found free could be taken by another test's server.
        let closedPort = try ClosedPort()
        let nothingListens = "redis://127.0.0.1:\(closedPort.port)"
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(
            upstream: upstream.url, policies: try Self.policies(), sharedLimits: try Self.settings(nothingListens, mode: mode))
        let response = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a"}"#, id: 7))
        let records = try gateway.auditRecords()
        #expect(records.count == 1)
        #expect(records.first?["shared_limits"]?.stringValue == mode.rawValue)
        switch mode {
        case .failClosed:
            #expect(response.status == 503)
            #expect(response.header("Retry-After") == "1")
            let error = try JSONParser.parse(response.body).objectValue?["error"]?.objectValue
            #expect(error?["code"]?.numberValue?.int64Value == Int64(GatewayErrorCode.sharedLimitsUnavailable))
            #expect(error?["message"]?.stringValue?.hasPrefix("rate limits unavailable") == true)
            #expect(records.first?["decision"]?.stringValue == "unavailable")
            #expect(upstream.received.isEmpty)
        case .localFallback:
            #expect(response.status == 200)
            #expect(records.first?["decision"]?.stringValue == "allow")
            #expect(upstream.received.count == 1)
        }
        let metrics = String(decoding: gateway.services.metrics.render(services: gateway.services), as: UTF8.self)
        #expect(metrics.contains("mcpgw_shared_limits_store_up 0"))
        #expect(metrics.contains(#"mcpgw_shared_limits_degraded_decisions_total{tenant="acme",mode="\#(mode.rawValue)"} 1"#))
        try await gateway.stop()
        await upstream.stop()
        withExtendedLifetime(closedPort) {}
    }
}

/// A Redis that has stopped answering commands: it answers a connection's `PING` (so the connection is made) and
/// takes in everything else without a word.
private final class Listening: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let heard: NIOLockedValueBox<String>
    init(heard: NIOLockedValueBox<String>) { self.heard = heard }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(decoding: unwrapInboundIn(data).readableBytesView, as: UTF8.self)
        heard.withLockedValue { $0 += text }
        if text.contains("PING") {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "+PONG\r\n")), promise: nil)
        }
    }
}

import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StrictJSON
import TLS
import TestSupport
import Testing

@testable import Gateway

/// What operators see: metrics counted from the audit records (exact deltas, bounded labels), readiness that follows
/// the audit sink, the admin listener's endpoints, and W3C trace context carried to the upstream and into records.
@Suite("Operations: metrics, readiness, trace context", .serialized)
struct OperationsTests {
    /// The metrics as `series → value` (`name{labels}` exactly as rendered).
    static func scrape(_ services: GatewayServices) -> [String: Double] {
        let text = String(decoding: services.metrics.render(services: services), as: UTF8.self)
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        return values
    }

    static func delta(_ before: [String: Double], _ after: [String: Double], _ series: String) -> Double {
        (after[series] ?? 0) - (before[series] ?? 0)
    }

    @Test("a scripted mix of allowed, audited, denied, rate-limited and unauthenticated calls moves each counter by exactly its count")
    func exactDeltas() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, frozenClock: true)
        let before = Self.scrape(gateway.services)
        for _ in 0..<2 { #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a"}"#)).status == 200) }
        _ = try await gateway.client().send(body: RPC.call("delete_file", #"{"path":"a"}"#))
        // L1: write_* at most 5 at once per agent and tool (the clock is frozen, so no refill).
        for _ in 0..<6 { _ = try await gateway.client().send(body: RPC.call("write_report", #"{"text":"x"}"#)) }
        for _ in 0..<3 { #expect(try await gateway.client(nil).send(body: RPC.call("read_file")).status == 401) }
        let after = Self.scrape(gateway.services)
        let expected: [(String, Double)] = [
            (#"mcpgw_requests_total{tenant="acme",method="tools/call",decision="allow"}"#, 2),
            (#"mcpgw_requests_total{tenant="acme",method="tools/call",decision="audit"}"#, 5),
            (#"mcpgw_requests_total{tenant="acme",method="tools/call",decision="deny"}"#, 1),
            (#"mcpgw_requests_total{tenant="acme",method="tools/call",decision="rate_limited"}"#, 1),
            (#"mcpgw_requests_total{tenant="none",method="none",decision="authentication_failed"}"#, 3),
            (#"mcpgw_policy_decisions_total{tenant="acme",decision="allow",rule="R1"}"#, 2),
            (#"mcpgw_policy_decisions_total{tenant="acme",decision="audit",rule="R2"}"#, 5),
            (#"mcpgw_policy_decisions_total{tenant="acme",decision="deny",rule="R3"}"#, 1),
            (#"mcpgw_rate_limited_total{tenant="acme",rule="L1"}"#, 1),
            (#"mcpgw_authentication_failures_total{reason="no_credentials"}"#, 3),
            ("mcpgw_audit_records_total", 0),  // written by the audit thread; checked below once flushed
        ]
        for (series, count) in expected.dropLast() {
            #expect(Self.delta(before, after, series) == count, "\(series)")
        }
        gateway.services.audit.flush()
        #expect(Self.delta(before, Self.scrape(gateway.services), "mcpgw_audit_records_total") == 12)
        // Upstream latency: one histogram observation per forwarded call (2 allowed + 5 audited).
        #expect(Self.delta(before, after, #"mcpgw_upstream_response_seconds_count{tenant="acme"}"#) == 7)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("labels stay bounded: 10,000 made-up tool names and methods add no series of their own")
    func boundedLabels() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        // End to end, a few: unknown tools (default deny) and unknown methods.
        for index in 0..<20 {
            _ = try await gateway.client().send(body: RPC.call("tool_\(index)"))
            _ = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"made/up_\#(index)","params":{}}"#)
        }
        let series = Set(Self.scrape(gateway.services).keys)
        // And at scale, straight into the counting step: the records those requests produce.
        var records: [AuditRecord] = []
        for index in 0..<10_000 {
            var record = AuditRecord(requestID: "r\(index)", httpMethod: "POST", decision: index % 2 == 0 ? .deny : .malformed, reason: "x")
            record.tenant = index % 3 == 0 ? "acme" : "tenant-\(index)"
            record.method = index % 2 == 0 ? "tools/call" : "method-\(index)"
            record.target = "tool-\(index)"
            record.rule = index % 5 == 0 ? "default" : "rule-\(index)"
            records.append(record)
        }
        gateway.services.metrics.observe(records)
        let grown = Set(Self.scrape(gateway.services).keys).subtracting(series)
        #expect(grown.count <= 12, "new series: \(grown.sorted())")
        #expect(!grown.contains { $0.contains("tool-") || $0.contains("method-") || $0.contains("rule-") || $0.contains("tenant-") })
        let rendered = String(decoding: gateway.services.metrics.render(services: gateway.services), as: UTF8.self)
        #expect(!rendered.contains("made/up") && !rendered.contains("tool_1"))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("/readyz turns 503 when the audit sink fails and 200 again when it recovers; the admin listener's endpoints answer")
    func readiness() async throws {
        let sink = FlakySink()
        sink.failing.withLock { $0 = false }
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, auditSink: .writer(sink))
        let admin = try await AdminListener.bind(
            address: ListenAddress(host: "127.0.0.1", port: 0), tls: nil, services: gateway.services,
            operations: .init(reload: { ReloadReport(parts: [.init(name: "policies", succeeded: true, detail: "test")]) }),
            logger: Logger(label: "admin-test"))
        let base = "http://127.0.0.1:\(admin.localAddress.port!)"
        func get(_ path: String, method: String = "GET") async throws -> (status: Int, body: String) {
            let result = try await ExternalProcess.run(["curl", "-s", "-X", method, "-w", "\n%{http_code}", base + path])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
        }
        #expect(try await get("/healthz").status == 200)
        #expect(try await get("/readyz").status == 200)
        #expect(try await get("/metrics").body.contains("mcpgw_audit_accepting 1"))
        #expect(try await get("/reload", method: "POST").body.contains(#""reloaded":true"#))
        #expect(try await get("/reload").status == 405)
        #expect(try await get("/nothing").status == 404)

        sink.failing.withLock { $0 = true }
        _ = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a"}"#))
        let failed = ContinuousClock.now + .seconds(5)
        while gateway.services.audit.isAccepting && ContinuousClock.now < failed { try await Task.sleep(for: .milliseconds(5)) }
        let unready = try await get("/readyz")
        #expect(unready.status == 503)
        #expect(unready.body.contains(#""audit_writable":false"#))
        sink.failing.withLock { $0 = false }
        let recovered = ContinuousClock.now + .seconds(5)
        while !gateway.services.audit.isAccepting && ContinuousClock.now < recovered { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try await get("/readyz").status == 200)
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a reload runs on a thread of its own: it completes while every thread of the pool that verifies fresh tokens is busy")
    func reloadOffTheSharedPool() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let admin = try await AdminListener.bind(
            address: ListenAddress(host: "127.0.0.1", port: 0), tls: nil, services: gateway.services,
            operations: .init(reload: { ReloadReport(parts: [.init(name: "policies", succeeded: true, detail: "test")]) }),
            logger: Logger(label: "admin-test"))
        let pool = HeldThreadPool()
        let result = try await ExternalProcess.run([
            "curl", "-s", "--max-time", "10", "-X", "POST", "-w", "\n%{http_code}", "http://127.0.0.1:\(admin.localAddress.port!)/reload",
        ])
        try await pool.release()
        #expect(result.stdout.hasSuffix("\n200"), "\(result.stdout)")
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("the client's trace continues to the upstream (header and 2026-07-28 _meta) with the gateway's span, and into the audit record")
    func traceContext() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let traceID = "0af7651916cd43dd8448eb211c80319c"
        let client = "00-\(traceID)-b7ad6b7169203331-01"
        _ = try await gateway.client().send(
            body: RPC.call("read_file", #"{"path":"a"}"#), headers: [("traceparent", client), ("tracestate", "vendor=1")])
        let forwarded = try #require(upstream.received.last?.header("traceparent"))
        let parts = forwarded.split(separator: "-")
        #expect(parts.count == 4 && parts[1] == Substring(traceID) && parts[2] != "b7ad6b7169203331" && parts[3] == "01")
        #expect(upstream.received.last?.header("tracestate") == "vendor=1")

        // 2026-07-28: trace context in _meta (no header); the upstream gets it in both places, as the gateway's hop.
        let (body, headers) = ProtocolCompletenessTests.modernCall("read_file", #"{"path":"a"}"#)
        let modernTrace = "1af7651916cd43dd8448eb211c80319c"
        let withMeta = body.replacingOccurrences(
            of: #"clientCapabilities":{}"#, with: #"clientCapabilities":{},"traceparent":"00-\#(modernTrace)-b7ad6b7169203331-01""#)
        _ = try await gateway.client().send(body: withMeta, headers: headers)
        let modern = try #require(upstream.received.last)
        let header = try #require(modern.header("traceparent"))
        #expect(header.contains(modernTrace))
        let meta = try JSONParser.parse(modern.body).objectValue?["params"]?.objectValue?["_meta"]?.objectValue
        #expect(meta?["traceparent"] == .string(header))

        // A malformed traceparent starts a new trace.
        _ = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a"}"#), headers: [("traceparent", "00-xyz")])
        let records = try gateway.auditRecords()
        #expect(records.map { $0["trace_id"]?.stringValue }.prefix(2) == [traceID, modernTrace])
        let fresh = try #require(records.last?["trace_id"]?.stringValue)
        #expect(fresh.count == 32 && fresh != traceID && fresh.allSatisfy(\.isHexDigit))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("traceparent values are read as W3C says")
    func traceparentParsing() {
        #expect(TraceContext.parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") != nil)
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", "0af7651916cd43dd8448eb211c80319c", "",
        ] {
            #expect(TraceContext.parse(bad) == nil, "\(bad)")
        }
        #expect(TraceContext.parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future") != nil)
    }

    @Test("a log line about one thing passes once per interval and says how many were held back")
    func logThrottle() {
        let throttle = LogThrottle(interval: 60)
        #expect(throttle.admit("upstream/acme", now: 0) == 0)
        for second in 1..<30 { #expect(throttle.admit("upstream/acme", now: Double(second)) == nil) }
        #expect(throttle.admit("upstream/globex", now: 30) == 0)
        #expect(throttle.admit("upstream/acme", now: 61) == 29)
    }
}

@Suite("Admin listener over mutual TLS", .serialized)
struct AdminTLSTests {
    @Test("with TLS settings, only holders of a certificate from the admin CA are served")
    func mutualTLS() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let tls = try TLSContext(
            role: .server,
            configuration: TLSConfiguration(
                certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
                trustedCABundles: [.init(label: "admin", path: DevPKI.tenantCA("acme"))], clientAuthentication: .required))
        let admin = try await AdminListener.bind(
            address: ListenAddress(host: "127.0.0.1", port: 0), tls: TLSContextStore(tls), services: gateway.services,
            operations: .init(reload: { ReloadReport() }), logger: Logger(label: "admin-test"))
        let port = admin.localAddress.port!
        let scraped = try await TestHTTPClient(port: port, agent: "acme/agents/bot1").send(.GET, path: "/metrics")
        #expect(scraped.status == 200 && scraped.body.contains("mcpgw_audit_accepting"))
        // Without a certificate, or with one from another CA, the handshake fails: nothing is answered.
        for agent in [nil, "globex/agents/bot1"] {
            let refused = try? await TestHTTPClient(port: port, agent: agent).send(.GET, path: "/metrics")
            #expect(
                refused == nil || refused?.status == 0,
                "\(agent ?? "no certificate"): \(refused?.status ?? 0) \(refused?.body.prefix(80) ?? "")")
        }
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }
}

extension OperationsTests {
    @Test("an open admin connection closes when the admin TLS trust is reloaded (it was verified against the old one)")
    func adminConnectionsCloseOnTrustReload() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let configuration = TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [.init(label: "admin", path: DevPKI.tenantCA("acme"))], clientAuthentication: .required)
        let store = TLSContextStore(try TLSContext(role: .server, configuration: configuration))
        let admin = try await AdminListener.bind(
            address: ListenAddress(host: "127.0.0.1", port: 0), tls: store, services: gateway.services,
            operations: .init(reload: { ReloadReport() }), logger: Logger(label: "admin-test"))
        let client = try await RawTLSClient.connect(port: admin.localAddress.port!)
        try await client.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        #expect(await client.wait { $0.contains(#""status":"ok""#) })
        #expect(!client.isClosed, "kept alive")
        store.replace(with: try TLSContext(role: .server, configuration: configuration))
        #expect(await client.waitForClose(timeout: .seconds(5)), "the connection outlived the reload")
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }
}

/// The admin listener's own bounds: connections in all and per source, idle and request-head deadlines, and the Host
/// check that keeps a rebinding web page out.
@Suite("Admin listener limits", .serialized)
struct AdminLimitsTests {
    static func bind(_ gateway: GatewayFixture, limits: AdminListener.Limits) async throws -> AdminListener {
        try await AdminListener.bind(
            address: ListenAddress(host: "127.0.0.1", port: 0), tls: nil, services: gateway.services,
            operations: .init(reload: { ReloadReport() }), logger: Logger(label: "admin-test"), limits: limits)
    }

    static func healthz(_ port: Int, from source: String = "127.0.0.1", _ extra: [String] = []) async throws -> Int {
        let result = try await ExternalProcess.run(
            ["curl", "-s", "--max-time", "5", "--interface", source, "-o", "/dev/null", "-w", "%{http_code}"] + extra
                + ["http://127.0.0.1:\(port)/healthz"])
        return Int(result.stdout) ?? 0
    }

    /// A plain keep-alive connection to the admin listener on `port` that has had one `/healthz` answered.
    static func answeredConnection(_ port: Int) async throws -> any Channel {
        let answered = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FirstAnswer(answered)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")).get()
        try await answered.futureResult.get()
        return channel
    }

    /// Whether the gateway closes `channel` within `bound` (which only bounds the test on a loaded machine; the
    /// channel is closed here after it).
    static func closedByGateway(_ channel: any Channel, within bound: Duration) async throws -> Bool {
        let closed = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await channel.closeFuture.get()
                return true
            }
            group.addTask {
                try await Task.sleep(for: bound)
                return false
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        if !closed { try? await channel.close() }
        return closed
    }

    /// Completes its promise with the first bytes read; fails it if the connection closes before.
    final class FirstAnswer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let answered: EventLoopPromise<Void>
        init(_ answered: EventLoopPromise<Void>) { self.answered = answered }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { answered.succeed() }
        func channelInactive(context: ChannelHandlerContext) { answered.fail(ChannelError.alreadyClosed) }
    }

    @Test("a source holding its share of admin connections is refused more; another source is served")
    func connectionsPerSource() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        var limits = AdminListener.Limits()
        limits.maximumConnectionsPerSource = 2
        let admin = try await Self.bind(gateway, limits: limits)
        let port = admin.localAddress.port!
        // 127.0.0.1 takes its two slots with keep-alive connections that have been answered once: admitted for certain
        // (a bare socket might not have been accepted yet when the next one comes, on a loaded machine), and held open
        // until the idle timeout (60 s).
        let held = [try await Self.answeredConnection(port), try await Self.answeredConnection(port)]
        var refused = try await Self.healthz(port)
        for _ in 0..<20 where refused == 200 {
            try await Task.sleep(for: .milliseconds(50))  // the held sockets may not have been accepted yet (bounded)
            refused = try await Self.healthz(port)
        }
        #expect(refused != 200)
        #expect(try await Self.healthz(port, from: "127.0.0.2") == 200)
        for channel in held { try await channel.close() }
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an admin connection whose request head trickles past its deadline, or that stays silent, is closed")
    func deadlines() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        var limits = AdminListener.Limits()
        limits.requestHeadTimeout = .milliseconds(300)
        limits.idleTimeout = .milliseconds(600)
        let admin = try await Self.bind(gateway, limits: limits)
        let port = admin.localAddress.port!
        for partial in ["GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", ""] {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port)
                .get()
            // On a loaded machine the gateway may already have closed the connection (its deadline passed before this
            // write): that is the outcome the test waits for, not a failure.
            if !partial.isEmpty { try? await channel.writeAndFlush(ByteBuffer(string: partial)) }
            #expect(
                try await Self.closedByGateway(channel, within: .seconds(30)),
                "the gateway kept the connection (\(partial.isEmpty ? "silent" : "partial head"))")
        }
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }

    /// Found by review: the 400 said `Connection: close`, and the socket stayed open until the request head deadline
    /// (10 s by default), holding one of the listener's few slots.
    @Test("a request the HTTP parser refuses gets 400 and its connection is closed at once")
    func malformedRequestClosesTheConnection() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        var limits = AdminListener.Limits()
        limits.requestHeadTimeout = .seconds(30)
        limits.idleTimeout = .seconds(30)
        let admin = try await Self.bind(gateway, limits: limits)
        let port = admin.localAddress.port!
        for request in [
            "GET /healthz HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", "\u{1}\u{2}junk\r\n\r\n",
            "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let received = NIOLockedValueBox(ByteBuffer())
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(received)) }
                }
                .connect(host: "127.0.0.1", port: port).get()
            try? await channel.writeAndFlush(ByteBuffer(string: request))
            #expect(try await Self.closedByGateway(channel, within: .seconds(10)), "still open after the 400: \(request.debugDescription)")
            #expect(String(buffer: received.withLockedValue { $0 }).hasPrefix("HTTP/1.1 400"), "\(request.debugDescription)")
        }
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }

    /// Keeps every byte read.
    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<ByteBuffer>
        init(_ received: NIOLockedValueBox<ByteBuffer>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            received.withLockedValue { $0.writeBuffer(&bytes) }
        }
    }

    @Test("Host must be one, with a numeric port: none, two, or 'evil.example:1:2' are refused on a plain HTTP admin listener")
    func hostChecks() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let admin = try await Self.bind(gateway, limits: AdminListener.Limits())
        let port = admin.localAddress.port!
        #expect(try await Self.healthz(port) == 200)
        #expect(try await Self.healthz(port, ["-H", "Host: [::1]:80"]) == 200)
        #expect(try await Self.healthz(port, ["-H", "Host:"]) == 403)
        #expect(try await Self.healthz(port, ["-H", "Host: evil.example:1:2"]) == 403)
        #expect(try await Self.healthz(port, ["-H", "Host: [::1]evil.example"]) == 403)
        #expect(try await Self.healthz(port, ["-H", "Host: [::1]:x.evil.example"]) == 403)
        // Two Host headers (curl sends only one of them): a raw request.
        let twice = try await ExternalProcess.run([
            "python3", "-c",
            "import socket; s = socket.create_connection(('127.0.0.1', \(port))); "
                + "s.sendall(b'GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nHost: evil.example\\r\\n\\r\\n'); "
                + "print(s.recv(100).split()[1].decode())",
        ])
        #expect(twice.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "403", "\(twice.stdout) \(twice.stderr)")
        #expect(try await Self.healthz(port, ["-H", "Host: evil.example"]) == 403)
        // A Host of 40,000 combining marks of two classes, compared as text: seconds of this event loop (found by
        // review). Refused as not stream-safe; 30 in a row are only a foreign host.
        let marks = { (count: Int) in String(repeating: "\u{0301}\u{0316}", count: count / 2) }
        #expect(try await Self.healthz(port, ["-H", "Host: x\(marks(40_000))"]) == 400)
        #expect(try await Self.healthz(port, ["-H", "Host: x\(marks(30))"]) == 403)
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }
}

import Foundation
import Logging
import NIOCore
import NIOPosix
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// Readiness follows whether upstreams can be reached (connects and TLS handshakes), per upstream: not the outcome of
/// calls, and not per tenant.
@Suite("Readiness: upstreams reached or not", .serialized)
struct ReadinessTests {
    /// The readiness answer's `checks`.
    static func checks(_ services: GatewayServices) -> (ready: Bool, checks: [String: JSONValue]) {
        let (ready, body) = AdminListener.readiness(services)
        let checks = body.objectValue?["checks"]?.objectValue
        return (ready, Dictionary(uniqueKeysWithValues: checks?.members.map { ($0.key, $0.value) } ?? []))
    }

    static func strings(_ value: JSONValue?) -> [String] { value?.arrayValue?.compactMap(\.stringValue) ?? [] }

    @Test("a dead upstream is unreachable for every tenant it serves, as soon as one tenant's call fails to connect")
    func deadUpstreamSharedByTenants() async throws {
        let closed = try ClosedPort()
        let gateway = try await GatewayFixture.start(upstream: "http://127.0.0.1:\(closed.port)/mcp")
        #expect(Self.checks(gateway.services).ready)
        // Only acme calls; globex, served by the same upstream, sends nothing.
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 502)
        let (ready, checks) = Self.checks(gateway.services)
        #expect(!ready)
        #expect(Self.strings(checks["upstreams_failing"]) == ["acme", "globex"])
        let entries = checks["upstreams_unreachable"]?.arrayValue ?? []
        #expect(entries.count == 1)
        let entry = entries.first?.objectValue
        #expect(entry?["upstream"]?.stringValue == "http://127.0.0.1:\(closed.port)")
        #expect(Self.strings(entry?["tenants"]) == ["acme", "globex"])
        #expect(entry?["error"]?.stringValue?.lowercased().contains("refused") == true, "\(String(describing: entry))")
        let metrics = String(decoding: gateway.services.metrics.render(services: gateway.services), as: UTF8.self)
        #expect(metrics.contains(#"mcpgw_upstream_reachable{tenant="globex"} 0"#), "\(metrics)")
        try await gateway.stop()
        withExtendedLifetime(closed) {}
    }

    @Test("a call that times out, or gets a broken answer, says nothing of reachability: the upstream was reached")
    func slowOrBrokenCallsAreNotUnreachable() async throws {
        let slow = try await RawUpstream.start(delay: .milliseconds(1500)) { request in
            RequestPathTests.json200(RequestPathTests.id(in: request))
        }
        let limits = GatewayLimits(upstreamTimeout: .milliseconds(300))
        let gateway = try await GatewayFixture.start(upstream: slow.url, limits: limits, tenantsWithUpstream: ["acme"])
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 504)
        let (ready, checks) = Self.checks(gateway.services)
        #expect(ready)
        #expect(Self.strings(checks["upstreams_failing"]).isEmpty)
        try await gateway.stop()
        await slow.stop()

        let garbage = try await RawUpstream.start { _ in "NOT HTTP\r\n\r\n" }
        let broken = try await GatewayFixture.start(upstream: garbage.url, tenantsWithUpstream: ["acme"])
        #expect(try await broken.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 502)
        #expect(Self.checks(broken.services).ready)
        let metrics = String(decoding: broken.services.metrics.render(services: broken.services), as: UTF8.self)
        #expect(metrics.contains(#"mcpgw_upstream_reachable{tenant="acme"} 1"#), "\(metrics)")
        try await broken.stop()
        await garbage.stop()
    }

    @Test("a TLS handshake that fails is counted for its tenant only: another tenant verifying the same upstream is served")
    func handshakeFailurePerTenant() async throws {
        let upstream = try await RecordingUpstream.start(.json, tls: try HTTPSUpstreamTests.serverContext())
        // acme trusts another CA than the one that issued the upstream's certificate.
        let gateway = try await GatewayFixture.start(
            upstream: upstream.url, upstreamCA: DevPKI.gatewayCA, upstreamCAOfTenant: ["acme": DevPKI.tenantCA("acme")])
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 502)
        var (ready, checks) = Self.checks(gateway.services)
        #expect(ready)
        #expect(Self.strings(checks["upstreams_failing"]) == ["acme"])
        let error = checks["upstreams_unreachable"]?.arrayValue?.first?.objectValue?["error"]?.stringValue ?? ""
        #expect(error.hasPrefix("TLS handshake"), "\(error)")
        // A probe of acme's upstream runs the handshake again with acme's CAs, finds it failing again, and ends.
        let reachability = gateway.services.upstream.reachability
        let acmeKey = try #require(gateway.services.upstream.endpoint(for: "acme")).connectionKey
        let before = try #require(reachability.outcome(acmeKey))
        gateway.services.upstream.probeUnreachable(on: MultiThreadedEventLoopGroup.singleton.next(), interval: 0)
        #expect(try await eventually(within: .seconds(10)) { (reachability.outcome(acmeKey)?.attempted ?? 0) > before.attempted })
        #expect(reachability.outcome(acmeKey)?.reached == false)
        #expect(try await eventually(within: .seconds(10)) { !reachability.isProbing(acmeKey) })
        #expect(upstream.received.isEmpty)
        let globex = gateway.client("globex/agents/bot1")
        #expect(try await globex.send(body: RPC.call("get_weather", "{}")).status == 200)
        (ready, checks) = Self.checks(gateway.services)
        #expect(ready)
        #expect(Self.strings(checks["upstreams_failing"]) == ["acme"])
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a TLS handshake that fails for one tenant has the upstream's other tenants probed: a broken certificate is listed for all")
    func handshakeFailureProbesSiblings() async throws {
        let upstream = try await RecordingUpstream.start(.json, tls: try HTTPSUpstreamTests.serverContext())
        // Every tenant trusts another CA than the one that issued the upstream's certificate.
        let gateway = try await GatewayFixture.start(upstream: upstream.url, upstreamCA: DevPKI.tenantCA("acme"))
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 502)
        // Only acme called: globex, whose handshake was never tried, is not known to fail yet.
        var (ready, checks) = Self.checks(gateway.services)
        #expect(ready)
        #expect(Self.strings(checks["upstreams_failing"]) == ["acme"])
        let reachability = gateway.services.upstream.reachability
        let globexKey = try #require(gateway.services.upstream.endpoint(for: "globex")).connectionKey
        #expect(reachability.outcome(globexKey) == nil)
        gateway.services.upstream.probeUnreachable(on: MultiThreadedEventLoopGroup.singleton.next(), interval: 0)
        #expect(try await eventually(within: .seconds(10)) { reachability.outcome(globexKey) != nil && !reachability.isProbing(globexKey) })
        (ready, checks) = Self.checks(gateway.services)
        #expect(!ready)
        #expect(Self.strings(checks["upstreams_failing"]) == ["acme", "globex"])
        // globex was tried after acme began failing: not probed again until acme's handshake recovers and fails anew.
        let attempted = try #require(reachability.outcome(globexKey)).attempted
        try await Task.sleep(for: .milliseconds(100))
        gateway.services.upstream.probeUnreachable(on: MultiThreadedEventLoopGroup.singleton.next(), interval: 1000)
        try await Task.sleep(for: .milliseconds(300))
        #expect(reachability.outcome(globexKey)?.attempted == attempted)
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    /// Reads the client's first bytes (its ClientHello), then closes: a FIN, not a reset.
    final class CloseOnFirstRead: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.close(promise: nil) }
    }

    @Test("an HTTPS upstream that closes the connection during the handshake, with no alert, is unreachable")
    func handshakeClosedByUpstream() async throws {
        let closer = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(CloseOnFirstRead()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let gateway = try await GatewayFixture.start(
            upstream: "https://127.0.0.1:\(closer.localAddress!.port!)/mcp", tenantsWithUpstream: ["acme"],
            upstreamCA: DevPKI.gatewayCA)
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 502)
        let (ready, checks) = Self.checks(gateway.services)
        #expect(!ready)
        let error = checks["upstreams_unreachable"]?.arrayValue?.first?.objectValue?["error"]?.stringValue ?? ""
        #expect(error == "TLS handshake: the upstream closed the connection", "\(error)")
        try await gateway.stop()
        try await closer.close()
    }

    @Test("/readyz probes an unreachable upstream, so one that comes back is seen without any call; the probe sends nothing")
    func probeSeesAnUpstreamComeBack() async throws {
        var closed: ClosedPort? = try ClosedPort()
        let port = closed!.port
        let gateway = try await GatewayFixture.start(upstream: "http://127.0.0.1:\(port)/mcp")
        let admin = try await AdminListener.bind(
            address: ListenAddress(host: "127.0.0.1", port: 0), tls: nil, services: gateway.services,
            operations: .init(reload: { ReloadReport(parts: []) }, upstreamProbeInterval: 0.1),
            logger: Logger(label: "admin-test"))
        func readyz() async throws -> Int {
            let result = try await ExternalProcess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(admin.localAddress.port!)/readyz"])
            return Int(result.stdout) ?? 0
        }
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#)).status == 502)
        #expect(try await readyz() == 503)
        // Still down: probes find it so, and the gateway stays unready.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await readyz() == 503)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await readyz() == 503)
        // It comes back, and listens. No call is sent.
        closed = nil
        let upstream = try await RecordingUpstream.start(.json, port: port)
        var status = 0
        let deadline = ContinuousClock.now + .seconds(10)
        while status != 200 && ContinuousClock.now < deadline {
            status = try await readyz()
            try await Task.sleep(for: .milliseconds(150))
        }
        #expect(status == 200)
        #expect(upstream.received.isEmpty)
        try await admin.close()
        try await gateway.stop()
        await upstream.stop()
    }
}

@Suite("Upstream reachability records")
struct UpstreamReachabilityTests {
    @Test("the latest attempt wins; `since` moves only when the outcome changes; an older attempt recorded late is ignored")
    func outcomes() {
        let reachability = UpstreamReachability()
        #expect(reachability.outcome("u") == nil)
        reachability.failed("u", error: "refused", at: 10)
        reachability.failed("u", error: "refused again", at: 12)
        #expect(reachability.outcome("u") == .init(reached: false, error: "refused again", since: 10, attempted: 12))
        reachability.reached("u", at: 11)
        #expect(reachability.outcome("u")?.reached == false)
        reachability.reached("u", at: 13)
        #expect(reachability.outcome("u") == .init(reached: true, error: nil, since: 13, attempted: 13))
        reachability.failed("u", error: String(repeating: "x", count: 1000), at: 14)
        #expect(reachability.outcome("u")?.error?.count == UpstreamReachability.maximumErrorCharacters)
        #expect(reachability.outcome("other") == nil)
    }

    @Test("a probe starts only for a failed key, one at a time, and not sooner than the interval after the last attempt")
    func probes() {
        let reachability = UpstreamReachability()
        #expect(!reachability.beginProbe("u", interval: 1, at: 5))
        reachability.reached("u", at: 5)
        #expect(!reachability.beginProbe("u", interval: 1, at: 10))
        reachability.failed("u", error: "refused", at: 10)
        #expect(!reachability.beginProbe("u", interval: 1, at: 10.5))
        #expect(reachability.beginProbe("u", interval: 1, at: 11))
        #expect(reachability.isProbing("u"))
        #expect(!reachability.beginProbe("u", interval: 1, at: 12))
        reachability.probeEnded("u")
        #expect(!reachability.isProbing("u"))
        #expect(reachability.beginProbe("u", interval: 1, at: 12))
    }
}

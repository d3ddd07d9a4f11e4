import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// Large calls are decided on their own low-priority threads, a few per tenant, and a call cut off while it is being
/// decided still leaves its record.
@Suite("Large decisions", .serialized)
struct LargeDecisionTests {
    /// A call whose path argument is about `bytes` long: the path rules walk every one of its segments.
    static func heavyCall(bytes: Int, id: Int = 1) -> String {
        RPC.call("read_file", #"{"path":"\#(String(repeating: "a/", count: bytes / 2))x"}"#, id: id)
    }

    @Test("beyond its budget of large decisions in flight a tenant gets 429; another tenant is still served")
    func perTenantBudget() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        var limits = GatewayLimits()
        limits.maximumLargeDecisionsPerTenant = 1
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        var clients: [RawTLSClient] = []
        for index in 0..<4 {
            let client = try await RawTLSClient.connect(port: gateway.port)
            try await client.send(RawTLSClient.post(Self.heavyCall(bytes: 2 * 1024 * 1024, id: index)))
            clients.append(client)
        }
        for client in clients { await client.wait(timeout: .seconds(60)) { $0.contains("HTTP/1.1 ") && $0.contains("\r\n\r\n") } }
        let statuses = clients.map { String($0.text.prefix(12)) }
        #expect(statuses.contains("HTTP/1.1 429"), "\(statuses)")
        #expect(statuses.contains("HTTP/1.1 200"), "\(statuses)")
        let refused = try gateway.auditRecords().filter { $0["rule"] == .string("large_decision_budget") }
        #expect(!refused.isEmpty)
        #expect(refused.allSatisfy { $0["tenant"] == .string("acme") })
        let other = try await gateway.client("globex/agents/bot1").send(body: RPC.call("search", #"{"q":"x"}"#), timeout: .seconds(10))
        #expect(other.status == 200)
        for client in clients { await client.close() }
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "a tenant whose decision held a loop too long has its mid-sized calls decided off the loops; small ones and other tenants are not affected"
    )
    func costlyTenantsGoOffTheLoop() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        var limits = GatewayLimits()
        limits.costlyDecision = .nanoseconds(1)  // every timed decision counts as slow here
        limits.maximumCostlyDecisionsPerTenant = 0  // so that a call sent off the loop shows: refused, 429
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        // A mid-sized call, decided on the loop: slow (by the limit above), so acme is marked.
        let first = try await gateway.client().send(body: Self.heavyCall(bytes: 8 * 1024, id: 1))
        #expect(first.status == 200)
        #expect(gateway.services.costlyTenants.isCostly("acme", now: gateway.services.monotonicSeconds))
        let second = try await gateway.client().send(body: Self.heavyCall(bytes: 8 * 1024, id: 2))
        #expect(second.status == 429, "the costly tenant's mid-sized call was decided on the loop again")
        // Small calls stay on the loop; another tenant's first mid-sized call too.
        #expect(try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 3)).status == 200)
        let other = try await gateway.client("globex/agents/bot1").send(
            body: RPC.call("search", #"{"q":"\#(String(repeating: "x", count: 8 * 1024))"}"#, id: 4))
        #expect(other.status != 429)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a call whose client leaves while it is being decided is recorded as not decided, once")
    func abandonedDecision() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let client = try await RawTLSClient.connect(port: gateway.port)
        let pool = DecisionPool.shared
        let (startedBefore, finishedBefore) = (pool.started(queue: "acme"), pool.finished.load(ordering: .relaxed))
        try await client.send(RawTLSClient.post(Self.heavyCall(bytes: 3 * 1024 * 1024)))
        // The body is read and its decision has begun: counted in acme's queue of large decisions (the count of all
        // queues moved with other suites' decisions too, and the client sometimes left before this one began).
        let begun = ContinuousClock.now + .seconds(30)
        while pool.started(queue: "acme") == startedBefore && ContinuousClock.now < begun {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(pool.started(queue: "acme") > startedBefore, "the decision never began")
        await client.close()
        let deadline = ContinuousClock.now + .seconds(60)
        var records: [JSONObject] = []
        while records.isEmpty && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            records = try gateway.auditRecords()
        }
        #expect(records.count == 1, "\(records)")
        #expect(records.first?["rule"] == .string("abandoned"), "\(records)")
        #expect(records.first?["reason"]?.stringValue?.contains("while it was being decided") == true, "\(records)")
        #expect(records.first?["tenant"] == .string("acme"))
        #expect(upstream.received.isEmpty)
        // The decision finishing later adds nothing.
        let ended = ContinuousClock.now + .seconds(60)
        while pool.finished.load(ordering: .relaxed) == finishedBefore && ContinuousClock.now < ended {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(pool.finished.load(ordering: .relaxed) > finishedBefore, "the decision never ended")
        #expect(try gateway.auditRecords().count == 1)
        try await gateway.stop()
        await upstream.stop()
    }
}

@Suite("Decision pool fairness")
struct DecisionPoolFairnessTests {
    @Test("a tenant with its decisions queued never holds another tenant's decision behind them")
    func tenantsTakeTurns() async throws {
        let pool = DecisionPool(threads: 2)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let gate = DispatchSemaphore(value: 0)
        let heavyRunning = NIOLockedValueBox(0)
        // acme fills its four places with decisions that hold their thread until released.
        let heavy = (0..<4).map { _ in
            pool.run(for: "acme", limit: 4, on: loop) {
                heavyRunning.withLockedValue { $0 += 1 }
                gate.wait()
                return 1
            }
        }
        for _ in 0..<200 where heavyRunning.withLockedValue({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(5)) }
        // globex's one decision runs at once on the thread acme may not take.
        let light = pool.run(for: "globex", limit: 4, on: loop) { 2 }
        let answered = NIOLockedValueBox(false)
        light.whenSuccess { _ in answered.withLockedValue { $0 = true } }
        for _ in 0..<400 where !answered.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        #expect(answered.withLockedValue { $0 }, "globex waited behind acme's queue")
        #expect(heavyRunning.withLockedValue { $0 } == 1, "acme took every thread")
        // A fifth acme decision is refused; once released, acme's four all finish.
        let refused = pool.run(for: "acme", limit: 4, on: loop) { 0 }
        await #expect(throws: DecisionPoolRefused.self) { try await refused.get() }
        for _ in 0..<4 { gate.signal() }
        for decision in heavy { #expect(try await decision.get() == 1) }
        #expect(try await light.get() == 2)
    }
}

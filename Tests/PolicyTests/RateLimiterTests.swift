import Dispatch
import Policy
import Synchronization
import Testing

@Suite("Token-bucket rate limiter")
struct RateLimiterTests {
    static func limit(
        _ id: String = "L", rate: Double = 1, burst: Double = 3, per: RateLimitRule.Scope = .agentTool, tools: [String] = []
    ) -> RateLimitRule {
        RateLimitRule(
            id: id, methods: ["tools/call"], tools: tools.compactMap(NamePattern.init), agents: [], ratePerSecond: rate,
            burst: burst, scope: per, document: "test")
    }

    func take(_ limiter: RateLimiter, _ limits: [RateLimitRule], agent: String = "a", tool: String = "t", at now: Double) -> Double? {
        limiter.consume(tenant: "acme", agent: agent, method: "tools/call", tool: tool, limits: limits, now: now)?.retryAfter
    }

    @Test("a shard at its cap: a sweep for one limit of a call never loses another limit's bucket of the same call")
    func sweepDuringOneCall() {
        // One bucket per shard: the first limit's new (full) bucket fills the shard; the second limit finds it full,
        // sweeps, and the sweep drops that first bucket. The call must still be counted by both (and not crash).
        let limiter = RateLimiter(maximumBucketsPerTenant: 1, shardCount: 1)
        let limits = [Self.limit("A", rate: 1, burst: 2, per: .tenant), Self.limit("B", rate: 1, burst: 2, per: .agentTool)]
        #expect(take(limiter, limits, at: 100) == nil)
        #expect(take(limiter, limits, agent: "b", at: 200) == nil)
        #expect(take(limiter, limits, agent: "c", at: 300) == nil)
    }

    @Test("burst, then refusal with a retry time, then refill at the rate")
    func burstAndRefill() {
        let limiter = RateLimiter()
        let limits = [Self.limit(rate: 2, burst: 3)]
        for _ in 0..<3 { #expect(take(limiter, limits, at: 100) == nil) }
        let retry = take(limiter, limits, at: 100)
        #expect(retry == 0.5)
        #expect(take(limiter, limits, at: 100.25) != nil)
        #expect(take(limiter, limits, at: 100.5) == nil)
        // After a long pause the bucket holds `burst` again, not more.
        for _ in 0..<3 { #expect(take(limiter, limits, at: 1000) == nil) }
        #expect(take(limiter, limits, at: 1000) != nil)
    }

    @Test("keys are isolated per agent, per tool, per tenant as configured")
    func isolation() {
        let limiter = RateLimiter()
        let perAgentTool = [Self.limit(burst: 1)]
        #expect(take(limiter, perAgentTool, agent: "a", tool: "x", at: 0) == nil)
        #expect(take(limiter, perAgentTool, agent: "a", tool: "x", at: 0) != nil)
        #expect(take(limiter, perAgentTool, agent: "b", tool: "x", at: 0) == nil)
        #expect(take(limiter, perAgentTool, agent: "a", tool: "y", at: 0) == nil)
        let perTenant = [Self.limit("T", burst: 1, per: .tenant)]
        #expect(take(limiter, perTenant, agent: "a", at: 0) == nil)
        #expect(take(limiter, perTenant, agent: "b", at: 0) != nil)
        #expect(limiter.consume(tenant: "globex", agent: "a", method: "tools/call", tool: "t", limits: perTenant, now: 0) == nil)
    }

    @Test("several limits: all-or-nothing")
    func allOrNothing() {
        let limiter = RateLimiter()
        let limits = [Self.limit("wide", burst: 10, per: .tenant), Self.limit("narrow", burst: 1, per: .agent)]
        #expect(take(limiter, limits, at: 0) == nil)
        #expect(take(limiter, limits, at: 0) != nil)
        // The refused call took nothing from the wide bucket: 8 more calls by other agents fit in it, not 7.
        for index in 0..<9 { #expect(take(limiter, limits, agent: "other\(index)", at: 0) == nil, "\(index)") }
        #expect(take(limiter, limits, agent: "last", at: 0) != nil)
    }

    @Test("limits apply only to the tools and methods they name")
    func selection() {
        let limiter = RateLimiter()
        let limits = [Self.limit(burst: 1, tools: ["write_*"])]
        #expect(take(limiter, limits, tool: "read_file", at: 0) == nil)
        #expect(take(limiter, limits, tool: "read_file", at: 0) == nil)
        #expect(take(limiter, limits, tool: "write_file", at: 0) == nil)
        #expect(take(limiter, limits, tool: "write_file", at: 0) != nil)
    }

    @Test("memory is bounded: full buckets are forgotten, and at the cap invented names share one overflow bucket")
    func bounded() {
        let limiter = RateLimiter(maximumBucketsPerTenant: 16, shardCount: 1)
        let limits = [Self.limit(rate: 1, burst: 2, per: .agent)]
        for index in 0..<16 { #expect(take(limiter, limits, agent: "agent\(index)", at: 0) == nil) }
        #expect(limiter.bucketCount == 16)
        // No bucket is full yet at t=0: invented agents share the overflow bucket (burst 2), then are refused.
        #expect(take(limiter, limits, agent: "new1", at: 0) == nil)
        #expect(take(limiter, limits, agent: "new2", at: 0) == nil)
        #expect(take(limiter, limits, agent: "new3", at: 0) != nil)
        #expect(limiter.bucketCount == 17)
        // Later every bucket has refilled: they are forgotten, and a new agent gets its own bucket.
        #expect(take(limiter, limits, agent: "fresh", at: 10) == nil)
        #expect(limiter.bucketCount <= 2)
    }

    @Test("the bucket cap is per tenant: a tenant at its cap never pushes another tenant's agents into an overflow bucket")
    func capPerTenant() {
        // One shard for every tenant, so both tenants' buckets sit side by side.
        let limiter = RateLimiter(maximumBucketsPerTenant: 8, shardCount: 1)
        let limits = [Self.limit(rate: 1, burst: 2, per: .agent)]
        func take(_ tenant: String, _ agent: String) -> Bool {
            limiter.consume(tenant: tenant, agent: agent, method: "tools/call", tool: "t", limits: limits, now: 0) == nil
        }
        // acme invents agents: 8 buckets, then its new agents share acme's overflow bucket (burst 2).
        for index in 0..<8 { #expect(take("acme", "bot\(index)")) }
        #expect(take("acme", "invented1") && take("acme", "invented2"))
        #expect(!take("acme", "invented3"))
        // globex's agents each still get their own bucket with its full burst.
        for index in 0..<8 {
            #expect(take("globex", "agent\(index)") && take("globex", "agent\(index)"), "agent\(index)")
            #expect(!take("globex", "agent\(index)"))
        }
        #expect(limiter.bucketCount == 8 + 1 + 8)
    }

    @Test("one agent inventing tool names fills only its share of the tenant's buckets, and an overflow bucket of its own")
    func agentShare() {
        let limiter = RateLimiter(maximumBucketsPerTenant: 16, shardCount: 1)
        let limits = [Self.limit(rate: 0.001, burst: 1, per: .agentTool)]
        // bot1 invents 40 tools: 4 buckets (a quarter of the cap), then one overflow bucket of its own (burst 1).
        var lastTaken = RateLimiter.TakenTokens.none
        let granted = (0..<40).filter { index in
            let (refusal, taken) = limiter.take(tenant: "acme", agent: "bot1", tool: "write_\(index)", limits: limits, now: 0)
            if refusal == nil { lastTaken = taken }
            return refusal == nil
        }.count
        #expect(granted == RateLimiter.agentShare(16) + 1)
        #expect(limiter.bucketCount == RateLimiter.agentShare(16) + 1)
        // Its siblings still get a bucket for each tool they call, with its full burst.
        for agent in ["bot2", "bot3"] {
            for tool in ["write_notes", "read_file"] {
                #expect(take(limiter, limits, agent: agent, tool: tool, at: 0) == nil, "\(agent) \(tool)")
                #expect(take(limiter, limits, agent: agent, tool: tool, at: 0) != nil, "\(agent) \(tool)")
            }
        }
        // A call given back goes back to the bucket it was taken from: bot1's overflow bucket.
        limiter.giveBack(lastTaken, now: 0)
        #expect(take(limiter, limits, agent: "bot1", tool: "write_77", at: 0) == nil)
    }

    @Test("tokens taken are given back to the buckets they came from, even when the call's own bucket appeared since")
    func exactGiveBack() {
        let limiter = RateLimiter(maximumBucketsPerTenant: 16, shardCount: 1)
        let limits = [Self.limit(rate: 0.001, burst: 2, per: .agentTool)]
        func take(_ tool: String, at now: Double) -> RateLimiter.TakenTokens? {
            let (refusal, taken) = limiter.take(tenant: "acme", agent: "bot1", tool: tool, limits: limits, now: now)
            return refusal == nil ? taken : nil
        }
        // bot1's share (4 buckets) at time 0, one token taken from each; then `x` goes to its overflow bucket, twice.
        for index in 0..<4 { #expect(take("t\(index)", at: 0) != nil) }
        #expect(take("x", at: 0) != nil)
        let fromOverflow = take("x", at: 0)
        #expect(fromOverflow != nil)
        // At 1000 s the four are full again and are forgotten by the next placement, so `x` gets a bucket of its own
        // (two tokens, one taken); the overflow bucket holds one token.
        #expect(take("x", at: 1000) != nil)
        // The call counted in the overflow bucket is given back there: `x`'s own bucket keeps its one token. (Looked for
        // by name, the token went to `x`'s own bucket, which then granted two calls.)
        limiter.giveBack(fromOverflow!, now: 1000)
        #expect(take("x", at: 1000) != nil)
        #expect(take("x", at: 1000) == nil)
    }

    @Test("exact under concurrency: 8 threads × 1000 calls at one instant get exactly `burst` tokens")
    func concurrency() {
        let limiter = RateLimiter()
        let limits = [Self.limit(rate: 1, burst: 500, per: .tenant)]
        let granted = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for _ in 0..<1000
            where limiter.consume(tenant: "acme", agent: "a\(worker)", method: "tools/call", tool: "t", limits: limits, now: 5) == nil {
                granted.add(1, ordering: .relaxed)
            }
        }
        #expect(granted.load(ordering: .relaxed) == 500)
    }

    /// An engine whose only document, acme's, is `document`.
    static func acmeEngine(_ document: String) throws -> PolicyEngine {
        PolicyEngine(
            snapshot: PolicySnapshot(tenantDocuments: ["acme": [try PolicyFixtures.document(document)]], globalDocuments: [], directory: "")
        )
    }

    @Test("the engine returns rate_limited with the limit's id after the policy allows")
    func engine() throws {
        let engine = try Self.acmeEngine(
            #"{"rules":[{"id":"A","action":"allow","tools":["w"]}],"rate_limits":[{"id":"L","rate_per_second":1,"burst":2}]}"#)
        let call = try PolicyFixtures.call("w")
        #expect(engine.decide(call, now: 0).outcome == .allow)
        #expect(engine.decide(call, now: 0).outcome == .allow)
        let limited = engine.decide(call, now: 0)
        #expect(limited.outcome == .rateLimited(retryAfter: 1))
        #expect(limited.rule == "L")
        // Denied calls do not consume tokens.
        #expect(engine.decide(try PolicyFixtures.call("x"), now: 0).outcome == .deny)
    }

    @Test("a limit naming a plumbing request counts it without a decision; calls and other methods are not counted there")
    func plumbingRequests() throws {
        let engine = try Self.acmeEngine(
            #"{"default_action":"allow","rules":[],"rate_limits":[{"id":"LL","methods":["tools/list","ping"],"rate_per_second":1,"burst":1,"per":"agent"}]}"#
        )
        let passing = PolicyDecision(outcome: .allow, rule: "protocol", document: "", reason: "plumbing", matches: [], logArguments: false)
        func count(_ method: String, agent: String = "a1", now: Double = 0) -> PolicyDecision? {
            let request = PolicyRequest(tenant: "acme", agent: agent, scopes: [], method: method, target: nil, arguments: nil)
            guard case .decided(let decision) = engine.count(request, passing: passing, now: now, shared: nil, ledger: nil) else {
                return nil
            }
            return decision
        }
        #expect(count("tools/list")?.rule == "protocol")
        let limited = count("ping")
        #expect(limited?.outcome == .rateLimited(retryAfter: 1) && limited?.rule == "LL", "\(String(describing: limited))")
        // Another agent has a bucket of its own; a method the limit does not name is not counted; nor are calls.
        #expect(count("tools/list", agent: "a2")?.outcome == .allow)
        #expect(count("prompts/list")?.outcome == .allow)
        #expect(engine.decide(try PolicyFixtures.call("w"), now: 0).outcome == .allow)
        #expect(engine.decide(try PolicyFixtures.call("w"), now: 0).outcome == .allow)
        // A second later the bucket has a token again.
        #expect(count("tools/list", now: 1)?.outcome == .allow)
    }
}

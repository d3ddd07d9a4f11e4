import Policy
import Synchronization
import Testing

/// The engine's side of shared limits, against a scripted store: what is counted when, and what is given back.
@Suite("Shared rate limits in the engine")
struct SharedLimitsEngineTests {
    /// A store that answers what the test says and records what it is given back.
    final class ScriptedStore: SharedRateLimits {
        let answer: Mutex<SharedTake>
        let taken = Mutex<[String]>([])
        let givenBack = Mutex<[String]>([])
        init(_ answer: SharedTake) { self.answer = Mutex(answer) }
        func isShared(_ limit: RateLimitRule) -> Bool { (limit.sharing ?? .global) == .global }
        /// `taken` draws from every bucket asked for (the scripted answer's tokens are not used).
        func take(_ buckets: [SharedBucket], now: Double) -> SharedTake {
            let answer = self.answer.withLock { $0 }
            guard case .taken(let tokens) = answer else { return answer }
            taken.withLock { $0 += buckets.map(\.limit.id) }
            return .taken(SharedTokens(leased: tokens.usedLocalShares ? [] : buckets, local: tokens.local))
        }
        func giveBack(_ tokens: SharedTokens, now: Double) {
            givenBack.withLock { $0 += tokens.leased.map(\.limit.id) }
        }
    }

    /// Tokens as a store answers while out of reach: one taken from a local share.
    static func localShareTokens() -> SharedTokens {
        let limit = RateLimitRule(
            id: "G", methods: ["tools/call"], tools: [], agents: [], ratePerSecond: 1, burst: 5, scope: .agentTool, document: "d")
        let (_, taken) = RateLimiter().take(tenant: "acme", agent: "a", tool: "w", limits: [limit], now: 0)
        return SharedTokens(leased: [], local: taken)
    }

    /// acme allows `w`; G is shared (the default with a store), L is local with a burst of one.
    static func engine() throws -> PolicyEngine {
        let snapshot = PolicySnapshot(
            tenantDocuments: [
                "acme": [
                    try PolicyFixtures.document(
                        #"{"rules":[{"id":"A","action":"allow","tools":["w"]}],"rate_limits":[{"id":"G","rate_per_second":1,"burst":5},{"id":"L","rate_per_second":0.001,"burst":1,"scope":"local"}]}"#
                    )
                ]
            ],
            globalDocuments: [], directory: "")
        return PolicyEngine(snapshot: snapshot)
    }

    static func decided(_ step: DecisionStep) -> PolicyDecision? {
        if case .decided(let decision) = step { return decision }
        return nil
    }

    @Test("a shared bucket with nothing on hand leaves the call undecided, and counts nothing")
    func mustAskCountsNothing() throws {
        let engine = try Self.engine()
        let store = ScriptedStore(.mustAsk([]))
        let call = try PolicyFixtures.call("w")
        guard case .mustAsk = engine.decide(call, now: 0, shared: store, ledger: nil) else {
            Issue.record("decided without the shared bucket")
            return
        }
        // The local limit (burst 1) still has its token.
        store.answer.withLock { $0 = .taken(SharedTokens(leased: [])) }
        #expect(Self.decided(engine.decide(call, now: 0, shared: store, ledger: nil))?.outcome == .allow)
        #expect(Self.decided(engine.decide(call, now: 0, shared: store, ledger: nil))?.rule == "L")
    }

    @Test("a local refusal gives the shared tokens back: all or nothing across both kinds")
    func localRefusalGivesSharedBack() throws {
        let engine = try Self.engine()
        let store = ScriptedStore(.taken(SharedTokens(leased: [])))
        let call = try PolicyFixtures.call("w")
        #expect(Self.decided(engine.decide(call, now: 0, shared: store, ledger: nil))?.outcome == .allow)
        #expect(store.givenBack.withLock { $0 }.isEmpty)
        let refused = Self.decided(engine.decide(call, now: 0, shared: store, ledger: nil))
        #expect(refused?.rule == "L")
        #expect(store.givenBack.withLock { $0 } == ["G"])
    }

    @Test("an abandoned attempt's ledger gives every token back")
    func ledgerGivesBack() throws {
        let engine = try Self.engine()
        let store = ScriptedStore(.taken(SharedTokens(leased: [])))
        let call = try PolicyFixtures.call("w")
        let ledger = RateLimitLedger()
        #expect(Self.decided(engine.decide(call, now: 0, shared: store, ledger: ledger))?.outcome == .allow)
        ledger.giveBack(limiter: engine.limiter, store: store, now: 0)
        #expect(store.givenBack.withLock { $0 } == ["G"])
        // The local token is back too: the same call is admitted once more.
        #expect(Self.decided(engine.decide(call, now: 0, shared: store, ledger: nil))?.outcome == .allow)
        #expect(Self.decided(engine.decide(call, now: 0, shared: store, ledger: nil))?.outcome != .allow)
    }

    @Test("store out of reach: fail_closed refuses as unavailable, local_fallback says so on the decision")
    func failureModes() throws {
        let engine = try Self.engine()
        let call = try PolicyFixtures.call("w")
        let closed = Self.decided(engine.decide(call, now: 0, shared: ScriptedStore(.unavailable), ledger: nil))
        #expect(closed?.outcome == .limitsUnavailable)
        #expect(closed?.sharedLimitsNote == .failClosed)
        #expect(closed?.rule == "G")
        let fallback = Self.decided(engine.decide(call, now: 0, shared: ScriptedStore(.taken(Self.localShareTokens())), ledger: nil))
        #expect(fallback?.outcome == .allow)
        #expect(fallback?.sharedLimitsNote == .localFallback)
        let refused = Self.decided(
            engine.decide(call, now: 0, shared: ScriptedStore(.refused(index: 0, retryAfter: 2, fallback: true)), ledger: nil))
        #expect(refused?.outcome == .rateLimited(retryAfter: 2))
        #expect(refused?.sharedLimitsNote == .localFallback)
    }

    @Test("without a store every limit is local, whatever its scope")
    func noStoreMeansLocal() throws {
        let engine = try Self.engine()
        let call = try PolicyFixtures.call("w")
        #expect(engine.decide(call, now: 0).outcome == .allow)
        #expect(engine.decide(call, now: 0).rule == "L")
    }

    @Test("scope must be global or local")
    func scopeValues() throws {
        #expect(throws: PolicyLoadError.self) {
            try PolicyFixtures.document(#"{"rules":[],"rate_limits":[{"id":"G","rate_per_second":1,"scope":"cluster"}]}"#)
        }
        let limit = RateLimitRule(
            id: "G", methods: ["tools/call"], tools: [], agents: [], ratePerSecond: 10, burst: 5, scope: .agent, document: "d")
        let share = limit.share(of: 2)
        #expect(share.ratePerSecond == 5 && share.burst == 2)
        #expect(limit.share(of: 10).burst == 1)
    }
}

import Logging
import NIOCore
import NIOPosix
import Policy
import Redis
import TestSupport
import Testing

@testable import Gateway

/// Shared rate limits against a real `redis-server`: two limiters stand for two replicas.
@Suite struct SharedLimiterTests {
    static let origin = NIODeadline.now()
    static let clock: @Sendable () -> Double = { Double((NIODeadline.now() - origin).nanoseconds) / 1e9 }

    static func limit(rate: Double, burst: Double, per: RateLimitRule.Scope = .agent) -> RateLimitRule {
        RateLimitRule(
            id: "L1", methods: ["tools/call"], tools: [], agents: [], ratePerSecond: rate, burst: burst, scope: per, document: "d")
    }

    static func limiter(_ server: RedisServer, replicas: Int = 2, modes: [String: SharedLimitFailureMode] = [:]) throws -> SharedLimiter {
        var redis = try RedisSettings(url: server.url)
        redis.minimumBackoff = .milliseconds(20)
        redis.maximumBackoff = .milliseconds(100)
        var settings = SharedLimitSettings(redis: redis)
        settings.replicas = replicas
        settings.failureModes = modes
        settings.leaseSeconds = 0.1
        return SharedLimiter(settings: settings, clock: clock, logger: Logger(label: "test.shared"))
    }

    /// Takes a token as the gateway does: when the lease is empty, waits for it to be fetched and tries again.
    static func take(_ limiter: SharedLimiter, _ buckets: [SharedBucket]) async -> SharedTake {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        for _ in 0..<4 {
            let result = limiter.take(buckets, now: clock())
            guard case .mustAsk(let missing) = result else { return result }
            try? await limiter.ask(missing, on: loop).get()
        }
        return limiter.take(buckets, now: clock())
    }

    @Test func tworeplicasAdmitOneLimitBetweenThem() async throws {
        let server = try await RedisServer()
        let (a, b) = (try Self.limiter(server), try Self.limiter(server))
        defer { a.shutdown(); b.shutdown() }
        let limit = Self.limit(rate: 40, burst: 20)
        let bucket = SharedBucket(tenant: "acme", limit: limit, agent: "agent-1", tool: "read_file")
        let lease = a.settings.leaseSize(rate: 40, burst: 20)
        #expect(lease == 4)
        var admitted = 0
        var refused = 0
        let start = Self.clock()
        // Alternating replicas, as fast as they answer, for 1.5 s: far above 40/s.
        var turn = 0
        while Self.clock() - start < 1.5 {
            turn += 1
            switch await Self.take(turn % 2 == 0 ? a : b, [bucket]) {
            case .taken(let fallback):
                #expect(!fallback)
                admitted += 1
            case .refused: refused += 1
            default: Issue.record("unexpected answer")
            }
        }
        let elapsed = Self.clock() - start
        // One exact bucket admits at most burst + rate × time; leases add at most replicas × lease.
        let bound = 20 + 40 * elapsed + 2 * Double(lease)
        #expect(Double(admitted) <= bound, "admitted \(admitted) in \(elapsed) s, bound \(bound)")
        // Not starved either: well above one replica's share.
        #expect(Double(admitted) >= 20 + 40 * elapsed * 0.5, "admitted \(admitted) in \(elapsed) s")
        #expect(refused > admitted)
    }

    @Test func bucketsAreKeptPerAgentAndGivenBack() async throws {
        let server = try await RedisServer()
        let limiter = try Self.limiter(server)
        defer { limiter.shutdown() }
        let limit = Self.limit(rate: 0.01, burst: 3)
        let one = SharedBucket(tenant: "acme", limit: limit, agent: "one", tool: "t")
        let two = SharedBucket(tenant: "acme", limit: limit, agent: "two", tool: "t")
        for _ in 0..<3 { #expect(await Self.take(limiter, [one]) == .taken(fallback: false)) }
        guard case .refused(_, let wait, false) = await Self.take(limiter, [one]) else {
            Issue.record("a fourth call within the burst was admitted")
            return
        }
        #expect(wait > 10)
        // Another agent has its own bucket; a token given back can be taken again.
        #expect(await Self.take(limiter, [two]) == .taken(fallback: false))
        limiter.giveBack([one], fallback: false, now: Self.clock())
        #expect(limiter.take([one], now: Self.clock()) == .taken(fallback: false))
    }

    @Test func failureModesApplyWhileRedisIsDownAndSharingResumesAfter() async throws {
        let server = try await RedisServer()
        let limiter = try Self.limiter(server, replicas: 2, modes: ["closed": .failClosed, "fallback": .localFallback])
        defer { limiter.shutdown() }
        let limit = Self.limit(rate: 0.01, burst: 4)
        let closed = SharedBucket(tenant: "closed", limit: limit, agent: "a", tool: "t")
        let fallback = SharedBucket(tenant: "fallback", limit: limit, agent: "a", tool: "t")
        #expect(await Self.take(limiter, [closed]) == .taken(fallback: false))
        #expect(limiter.isStoreReachable)
        server.stop()
        // Leased tokens are still spent; then fail_closed refuses, local_fallback admits its share (4 / 2).
        var closedAnswers: [SharedTake] = []
        for _ in 0..<4 { closedAnswers.append(await Self.take(limiter, [closed])) }
        #expect(closedAnswers.last == .unavailable)
        #expect(!limiter.isStoreReachable)
        var fallbackAdmitted = 0
        for _ in 0..<5 {
            if case .taken(true) = await Self.take(limiter, [fallback]) { fallbackAdmitted += 1 }
        }
        #expect(fallbackAdmitted == 2)
        guard case .refused(_, _, true) = await Self.take(limiter, [fallback]) else {
            Issue.record("local share not enforced")
            return
        }
        // Redis back: a probe finds it and the limits are shared again, with no action.
        try await server.start()
        var recovered = false
        for _ in 0..<100 where !recovered {
            if case .taken(false) = await Self.take(limiter, [closed]) {
                recovered = true
            } else {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        #expect(recovered)
        #expect(limiter.isStoreReachable)
    }

    @Test func keysCannotCollide() throws {
        let limit = Self.limit(rate: 1, burst: 1, per: .agentTool)
        let first = SharedBucket(tenant: "a", limit: limit, agent: "b:c", tool: "d")
        let second = SharedBucket(tenant: "a", limit: limit, agent: "b", tool: "c:d")
        #expect(TokenBucketScript.key(first, prefix: "p:") != TokenBucketScript.key(second, prefix: "p:"))
        #expect(String(decoding: TokenBucketScript.key(first, prefix: "p:"), as: UTF8.self) == "p:a:L1:b%3Ac:d")
    }
}

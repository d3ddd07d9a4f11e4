import Foundation
import Identity

/// Measures the cost of verifying a bearer token: a fresh RS256 verification (signature + claims) against a
/// cached one (hash lookup), in the same run.
enum JWTBenchmark {
    static func run(iterations: Int) throws {
        let root = FileManager.default.currentDirectoryPath + "/certs-dev/jwt/"
        func file(_ name: String) throws -> [UInt8] {
            guard let data = FileManager.default.contents(atPath: root + name) else {
                throw BenchmarkError("cannot read \(root + name): run from the repository root")
            }
            return Array(data)
        }
        let settings = TenantJWTSettings(
            issuers: ["https://issuer.mcpgw.dev/acme"],
            keys: [
                try .publicKey(pem: try file("acme-rs256.pub"), keyID: "acme-rs256"),
                try .hmac(secret: try file("acme-hs256.secret"), keyID: "acme-hs256"),
            ],
            audience: "mcpgw")
        let uncached = try JWTVerifier(tenants: ["acme": settings], cacheCapacity: 0)
        let cached = try JWTVerifier(tenants: ["acme": settings], cacheCapacity: 10_000)
        let now = Date()
        let claims = TokenMinter.Claims(
            issuer: "https://issuer.mcpgw.dev/acme", audience: "mcpgw", tenant: "acme", agent: "bot1",
            scopes: ["tools:read"], issuedAt: now, lifetimeSeconds: 3600)
        let rsToken = try TokenMinter(key: .privateKey(pem: try file("acme-rs256.key")), keyID: "acme-rs256").mint(claims)
        let hsToken = try TokenMinter(key: .hmac(secret: try file("acme-hs256.secret")), keyID: "acme-hs256").mint(claims)

        let fresh = try measure("RS256 fresh (signature + claims)", iterations: iterations) { try uncached.verify(rsToken, now: now) }
        let hmac = try measure("HS256 fresh (signature + claims)", iterations: iterations) { try uncached.verify(hsToken, now: now) }
        _ = try cached.verify(rsToken, now: now)
        let hit = try measure("RS256 cached (cache hit)", iterations: iterations * 10) { try cached.verify(rsToken, now: now) }
        print(String(format: "ratio fresh RS256 / cached: %.1fx; fresh HS256 / cached: %.1fx", fresh / hit, hmac / hit))
    }

    /// Runs `body` `iterations` times after a warm-up; prints and returns nanoseconds per call.
    static func measure(_ name: String, iterations: Int, _ body: () throws -> VerifiedToken) throws -> Double {
        for _ in 0..<max(1, iterations / 10) { _ = try body() }
        let clock = ContinuousClock()
        var sink = 0
        let elapsed = try clock.measure {
            for _ in 0..<iterations { sink &+= try body().scopes.count }
        }
        let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
        let perCall = nanoseconds / Double(iterations)
        print(
            name.padding(toLength: 40, withPad: " ", startingAt: 0)
                + String(format: "%10.0f ns/verification  (%d runs, checksum %d)", perCall, iterations, sink))
        return perCall
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

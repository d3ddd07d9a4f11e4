import Foundation
import Synchronization
import Testing

@testable import Identity

/// Keys fetched over HTTPS, as the verifier sees them: looked up by the tenant of the token's issuer, and a cached
/// verification is only as good as the key set it was made under.
@Suite("Fetched signing keys")
struct RemoteKeyRingTests {
    static let issuer = "https://login.acme.test"

    static func verifier(_ ring: RemoteKeyRing) throws -> JWTVerifier {
        var settings = TenantJWTSettings(issuers: [issuer], keys: [], audience: "mcpgw")
        settings.remoteKeys = RemoteKeySettings(source: .discovery(issuer: issuer))
        return try JWTVerifier(tenants: ["acme": settings], remoteKeys: ring)
    }

    static func token(secret: String, kid: String) throws -> String {
        try TokenMinter(key: try JWTSigningKey.hmac(secret: Array(secret.utf8)), keyID: kid).mint(
            .init(issuer: issuer, audience: "mcpgw", tenant: "acme", agent: "bot1", scopes: [], issuedAt: Date(), lifetimeSeconds: 600))
    }

    @Test("a token verified under a key that the next fetched set withdraws is refused, even from the cache")
    func withdrawnKey() throws {
        let ring = RemoteKeyRing()
        let verifier = try Self.verifier(ring)
        let secretA = String(repeating: "a", count: 32)
        let token = try Self.token(secret: secretA, kid: "a")
        #expect(throws: AuthenticationError.unknownKeyID("a")) { try verifier.verify(token, now: Date()) }
        ring.replace([try JWTVerificationKey.hmac(secret: Array(secretA.utf8), keyID: "a")], for: "acme")
        #expect(try verifier.verify(token, now: Date()).tenant == "acme")
        #expect(try verifier.verify(token, now: Date(), cachedOnly: true) != nil, "the second check is a cache hit")

        ring.replace([try JWTVerificationKey.hmac(secret: Array(String(repeating: "b", count: 32).utf8), keyID: "b")], for: "acme")
        #expect(try verifier.verify(token, now: Date(), cachedOnly: true) == nil, "a cached answer outlived its key set")
        #expect(throws: AuthenticationError.unknownKeyID("a")) { try verifier.verify(token, now: Date()) }
        #expect(try verifier.verify(try Self.token(secret: String(repeating: "b", count: 32), kid: "b"), now: Date()).agent == "bot1")
    }

    @Test("a fetched set that drops a key tells the observers (listening streams are checked again); one that keeps every key does not")
    func withdrawalIsObserved() throws {
        let ring = RemoteKeyRing()
        let told = Mutex<[String]>([])
        ring.onKeysWithdrawn { tenant in told.withLock { $0.append(tenant) } }
        func key(_ id: String) throws -> JWTVerificationKey {
            try JWTVerificationKey.hmac(secret: Array(String(repeating: id, count: 32).utf8), keyID: id)
        }
        ring.replace([try key("a"), try key("b")], for: "acme")
        ring.replace([try key("a"), try key("b"), try key("c")], for: "acme")
        #expect(told.withLock { $0 }.isEmpty)
        ring.replace([try key("a"), try key("c")], for: "acme")
        #expect(told.withLock { $0 } == ["acme"])
    }

    @Test("the same keys fetched again keep the set's generation: verified tokens stay cached; a changed key does not")
    func unchangedSetKeepsTheCache() throws {
        let ring = RemoteKeyRing()
        let verifier = try Self.verifier(ring)
        let secret = String(repeating: "a", count: 32)
        let rsa = try JWTVerificationKey.publicKey(pem: DevKeys.file("acme-rs256.pub"), keyID: "r")
        ring.replace([try JWTVerificationKey.hmac(secret: Array(secret.utf8), keyID: "a"), rsa], for: "acme")
        let token = try Self.token(secret: secret, kid: "a")
        #expect(try verifier.verify(token, now: Date()).tenant == "acme")
        // Found by review: a refetch for an unknown kid (anyone can send one) that found the same keys made a new
        // generation, and every token of the tenant had its signature checked again.
        let sameRSA = try JWTVerificationKey.publicKey(pem: DevKeys.file("acme-rs256.pub"), keyID: "r")
        ring.replace([sameRSA, try JWTVerificationKey.hmac(secret: Array(secret.utf8), keyID: "a")], for: "acme")
        #expect(ring.generation(for: "acme") == 1)
        #expect(try verifier.verify(token, now: Date(), cachedOnly: true) != nil, "the cache was emptied by the same keys")
        // Another RSA key under the same id is a change.
        let otherRSA = try JWTVerificationKey.publicKey(pem: DevKeys.file("globex-rs256.pub"), keyID: "r")
        #expect(!rsa.isSameKey(as: otherRSA) && rsa.isSameKey(as: sameRSA))
        ring.replace([otherRSA, try JWTVerificationKey.hmac(secret: Array(secret.utf8), keyID: "a")], for: "acme")
        #expect(ring.generation(for: "acme") == 2)
        #expect(try verifier.verify(token, now: Date(), cachedOnly: true) == nil)
        // One key repeated in place of another under the same id is a change (found by review: matched one way only,
        // [A, B] then [A, A] counted as unchanged, and B stayed trusted).
        let first = try JWTVerificationKey.hmac(secret: Array(String(repeating: "1", count: 32).utf8), keyID: "d")
        let second = try JWTVerificationKey.hmac(secret: Array(String(repeating: "2", count: 32).utf8), keyID: "d")
        let told = Mutex<[String]>([])
        ring.onKeysWithdrawn { tenant in told.withLock { $0.append(tenant) } }
        ring.replace([first, second], for: "globex")
        ring.replace([first, first], for: "globex")
        #expect(ring.generation(for: "globex") == 2)
        // ... and B's withdrawal is told, so streams opened with its tokens are checked again.
        #expect(told.withLock { $0 } == ["globex"])
        #expect(!ring.keys(for: "globex").contains { $0.isSameKey(as: second) })
    }

    @Test("another tenant's configured key of the same kid does not hide the issuer's fetched one (found by review)")
    func configuredKidOfAnotherTenant() throws {
        let ring = RemoteKeyRing()
        var acme = TenantJWTSettings(issuers: [Self.issuer], keys: [], audience: "mcpgw")
        acme.remoteKeys = RemoteKeySettings(source: .discovery(issuer: Self.issuer))
        let otherSecret = Array(String(repeating: "g", count: 32).utf8)
        let globex = TenantJWTSettings(
            issuers: ["https://login.globex.test"], keys: [try JWTVerificationKey.hmac(secret: otherSecret, keyID: "k")],
            audience: "mcpgw")
        let verifier = try JWTVerifier(tenants: ["acme": acme, "globex": globex], remoteKeys: ring)
        let secret = String(repeating: "a", count: 32)
        ring.replace([try JWTVerificationKey.hmac(secret: Array(secret.utf8), keyID: "k")], for: "acme")
        #expect(try verifier.verify(try Self.token(secret: secret, kid: "k"), now: Date()).tenant == "acme")
    }

    @Test("a fetched set with two keys under one kid: a token signed by either verifies (found by review)")
    func twoKeysUnderOneKid() throws {
        let ring = RemoteKeyRing()
        let verifier = try Self.verifier(ring)
        let first = String(repeating: "1", count: 32), second = String(repeating: "2", count: 32)
        ring.replace(
            [
                try JWTVerificationKey.hmac(secret: Array(first.utf8), keyID: "d"),
                try JWTVerificationKey.hmac(secret: Array(second.utf8), keyID: "d"),
            ], for: "acme")
        #expect(try verifier.verify(try Self.token(secret: first, kid: "d"), now: Date()).tenant == "acme")
        #expect(try verifier.verify(try Self.token(secret: second, kid: "d"), now: Date()).tenant == "acme")
        #expect(throws: AuthenticationError.badSignature) {
            try verifier.verify(try Self.token(secret: String(repeating: "3", count: 32), kid: "d"), now: Date())
        }
    }

    @Test("a kid is looked up in the set of the tenant its issuer names, never another tenant's")
    func perTenantLookup() throws {
        let ring = RemoteKeyRing()
        let verifier = try Self.verifier(ring)
        let secret = String(repeating: "s", count: 32)
        ring.replace([try JWTVerificationKey.hmac(secret: Array(secret.utf8), keyID: "shared")], for: "globex")
        #expect(throws: AuthenticationError.unknownKeyID("shared")) {
            try verifier.verify(try Self.token(secret: secret, kid: "shared"), now: Date())
        }
    }
}

import Foundation
import Identity
import StrictJSON
import TestSupport

/// The development JWT keys from certs-dev/jwt and a verifier configured like mcpgw.dev.json.
enum DevKeys {
    static func file(_ name: String) -> [UInt8] {
        Array(FileManager.default.contents(atPath: DevPKI.path("jwt/" + name))!)
    }

    static func issuer(_ tenant: String) -> String { "https://issuer.mcpgw.dev/\(tenant)" }

    static func settings(_ tenant: String) throws -> TenantJWTSettings {
        TenantJWTSettings(
            issuers: [issuer(tenant)],
            keys: [
                try .publicKey(pem: file("\(tenant)-rs256.pub"), keyID: "\(tenant)-rs256"),
                try .hmac(secret: file("\(tenant)-hs256.secret"), keyID: "\(tenant)-hs256"),
            ],
            audience: "mcpgw")
    }

    static func verifier(cacheCapacity: Int = 100) throws -> JWTVerifier {
        try JWTVerifier(tenants: ["acme": settings("acme"), "globex": settings("globex")], cacheCapacity: cacheCapacity)
    }

    static func rsaMinter(_ tenant: String = "acme") throws -> TokenMinter {
        TokenMinter(key: try .privateKey(pem: file("\(tenant)-rs256.key")), keyID: "\(tenant)-rs256")
    }

    static func hmacMinter(_ tenant: String = "acme") throws -> TokenMinter {
        TokenMinter(key: try .hmac(secret: file("\(tenant)-hs256.secret")), keyID: "\(tenant)-hs256")
    }

    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func claims(
        tenant: String = "acme", agent: String = "bot1", issuedAt: Date = now, lifetime: Int64 = 3600
    )
        -> TokenMinter.Claims
    {
        .init(
            issuer: issuer(tenant), audience: "mcpgw", tenant: tenant, agent: agent, scopes: ["tools:read"],
            issuedAt: issuedAt, lifetimeSeconds: lifetime)
    }

    /// A token with exactly this header and payload JSON text, signed by `key` (or with `signature` as given).
    static func craft(header: String, payload: String, key: JWTSigningKey?, signature: String = "c2ln") throws -> String {
        let input = Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(Array(payload.utf8))
        guard let key else { return input + "." + signature }
        return input + "." + Base64URL.encode(try key.sign(Array(input.utf8)))
    }

    /// A valid acme payload as JSON text, with `overrides` replacing or adding members (nil removes).
    static func payload(_ overrides: [String: String?] = [:]) -> String {
        var members: [(String, String)] = [
            ("iss", "\"\(issuer("acme"))\""), ("sub", "\"bot1\""), ("aud", "\"mcpgw\""), ("tenant", "\"acme\""),
            ("iat", "1800000000"), ("exp", "1800003600"),
        ]
        for (key, value) in overrides {
            members.removeAll { $0.0 == key }
            if let value { members.append((key, value)) }
        }
        return "{" + members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }
}

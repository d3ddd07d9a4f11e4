import StrictJSON

public import struct Foundation.Date

/// Creates signed JWTs — for `mcpgw issue-token` (development credentials) and tests.
public struct TokenMinter: Sendable {
    /// What a minted token says.
    public struct Claims: Sendable {
        /// `iss`.
        public var issuer: String
        /// `aud`.
        public var audience: String
        /// The tenant claim's value.
        public var tenant: String
        /// `sub` (the agent).
        public var agent: String
        /// Space-separated into `scope`; omitted when empty.
        public var scopes: [String]
        /// `iat`/`nbf`.
        public var issuedAt: Date
        /// Lifetime from `issuedAt` to `exp`.
        public var lifetimeSeconds: Int64
        /// Name of the tenant claim.
        public var tenantClaim: String

        /// Claims with `tenant` as the tenant claim name.
        public init(
            issuer: String, audience: String, tenant: String, agent: String, scopes: [String], issuedAt: Date,
            lifetimeSeconds: Int64, tenantClaim: String = "tenant"
        ) {
            self.issuer = issuer
            self.audience = audience
            self.tenant = tenant
            self.agent = agent
            self.scopes = scopes
            self.issuedAt = issuedAt
            self.lifetimeSeconds = lifetimeSeconds
            self.tenantClaim = tenantClaim
        }
    }

    /// The signing key.
    public let key: JWTSigningKey
    /// The `kid` put in the header, if any.
    public let keyID: String?
    /// The header's `typ`.
    public let type: String

    /// A minter signing with `key`, announcing `keyID` and `type` (`JWT` by default; `at+jwt` for RFC 9068).
    public init(key: JWTSigningKey, keyID: String?, type: String = "JWT") {
        self.key = key
        self.keyID = keyID
        self.type = type
    }

    /// A compact JWS with these claims (plus a random `jti`).
    public func mint(_ claims: Claims) throws(JWTKeyError) -> String {
        let issued = Int64(claims.issuedAt.timeIntervalSince1970.rounded(.down))
        var headerMembers: [JSONObject.Member] = [
            .init(key: "alg", value: .string(key.algorithm.rawValue)), .init(key: "typ", value: .string(type)),
        ]
        if let keyID { headerMembers.append(.init(key: "kid", value: .string(keyID))) }
        var payload: [JSONObject.Member] = [
            .init(key: "iss", value: .string(claims.issuer)),
            .init(key: "sub", value: .string(claims.agent)),
            .init(key: "aud", value: .string(claims.audience)),
            .init(key: claims.tenantClaim, value: .string(claims.tenant)),
            .init(key: "iat", value: .number(JSONNumber(issued))),
            .init(key: "nbf", value: .number(JSONNumber(issued))),
            .init(key: "exp", value: .number(JSONNumber(issued + claims.lifetimeSeconds))),
            .init(key: "jti", value: .string(Base64URL.encode((0..<16).map { _ in UInt8.random(in: 0...255) }))),
        ]
        if !claims.scopes.isEmpty { payload.append(.init(key: "scope", value: .string(claims.scopes.joined(separator: " ")))) }
        let signingInput =
            Base64URL.encode(Array(JSONValue.object(JSONObject(headerMembers)).serialized.utf8)) + "."
            + Base64URL.encode(Array(JSONValue.object(JSONObject(payload)).serialized.utf8))
        let signature = try key.sign(Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }
}

import StrictJSON
import Synchronization

public import struct Foundation.Date

/// Verifies bearer JWTs for every tenant.
///
/// Order, after jwt-kit: size limit → strict split and decode → `alg` (never `none`) → key chosen by `kid`
/// (or, without `kid`, by the issuer when it has exactly one key) → the key's fixed algorithm must equal `alg` →
/// signature → only then the header's `typ` (where the tenant names types) and the claims (`exp`, `nbf`, `iat`, `iss`,
/// `aud`, tenant, agent, scopes).
public struct JWTVerifier: Sendable {
    private struct KeyEntry: Sendable {
        let tenant: String
        let key: JWTVerificationKey
        /// The generation of the fetched set the key came from; nil for a configured key.
        var keySetGeneration: Int? = nil
    }

    private let tenants: [String: TenantJWTSettings]
    /// Configured tenants that accept no tokens (no `jwt` settings): a token naming one is told apart from a token
    /// naming a tenant that does not exist.
    private let tenantsWithoutTokens: Set<String>
    private let keysByID: [String: KeyEntry]
    private let tenantByIssuer: [String: String]
    private let cache: VerifiedTokenCache
    /// Keys fetched over HTTPS for tenants that have `remoteKeys`.
    private let remoteKeys: RemoteKeyRing?
    /// Largest token accepted, in bytes.
    public let maximumTokenBytes: Int

    /// A verifier for these tenants. Fails when a `kid`, an issuer or a key is claimed by two tenants, or a tenant has
    /// no issuer or key.
    public init(
        tenants: [String: TenantJWTSettings], tenantsWithoutTokens: Set<String> = [], maximumTokenBytes: Int = 8192,
        cacheCapacity: Int = 10_000, remoteKeys: RemoteKeyRing? = nil
    ) throws(IdentityConfigurationError) {
        var keysByID: [String: KeyEntry] = [:]
        var tenantByIssuer: [String: String] = [:]
        var configuredKeys: [KeyEntry] = []
        for (tenant, settings) in tenants.sorted(by: { $0.key < $1.key }) {
            guard !settings.issuers.isEmpty else { throw .init("tenant '\(tenant)': JWT settings need at least one issuer") }
            guard !settings.keys.isEmpty || settings.remoteKeys != nil else {
                throw .init("tenant '\(tenant)': JWT settings need at least one key, or keys fetched over HTTPS")
            }
            guard !settings.audience.isEmpty else { throw .init("tenant '\(tenant)': JWT audience must not be empty") }
            for issuer in settings.issuers {
                if let owner = tenantByIssuer[issuer], owner != tenant {
                    throw .init("issuer '\(issuer)' is configured for both '\(owner)' and '\(tenant)'")
                }
                tenantByIssuer[issuer] = tenant
            }
            for key in settings.keys {
                // One key for two tenants: whoever signs with it (anyone, with a shared HS256 secret) mints tokens of
                // both, under either tenant's kid (found by review: only kids were compared).
                if let other = configuredKeys.first(where: { $0.tenant != tenant && $0.key.hasSameMaterial(as: key) }) {
                    throw .init("tenants '\(other.tenant)' and '\(tenant)' are configured with the same JWT key: each tenant needs its own")
                }
                configuredKeys.append(KeyEntry(tenant: tenant, key: key))
                guard let kid = key.keyID else { continue }
                if let existing = keysByID[kid] {
                    throw .init("kid '\(kid)' is configured twice (tenants '\(existing.tenant)' and '\(tenant)')")
                }
                keysByID[kid] = KeyEntry(tenant: tenant, key: key)
            }
        }
        self.tenants = tenants
        self.tenantsWithoutTokens = tenantsWithoutTokens
        self.keysByID = keysByID
        self.tenantByIssuer = tenantByIssuer
        self.cache = VerifiedTokenCache(capacity: cacheCapacity)
        self.maximumTokenBytes = maximumTokenBytes
        self.remoteKeys = remoteKeys
    }

    /// The tenant whose fetched key set a token with an unknown `kid` might be signed by: the tenant of its
    /// (unverified) issuer, when that tenant fetches keys over HTTPS. Only ever used to decide which configured URL to
    /// refetch — never a URL from the token.
    public func tenantToRefetch(for token: String) -> String? {
        guard let jws = try? CompactJWS(parsing: token, maximumBytes: maximumTokenBytes),
            let issuer = jws.payload["iss"]?.stringValue, let tenant = tenantByIssuer[issuer],
            tenants[tenant]?.remoteKeys != nil
        else { return nil }
        return tenant
    }

    /// How many verified tokens are cached.
    public var cachedTokenCount: Int { cache.count }

    /// Verifies `token` at time `now`.
    public func verify(_ token: String, now: Date) throws(AuthenticationError) -> VerifiedToken {
        try verify(token, now: now, cachedOnly: false)!
    }

    /// Verifies `token` at time `now`; with `cachedOnly`, returns nil instead of checking a signature (a token
    /// verified before and still inside its validity window costs a hash and a lookup).
    public func verify(_ token: String, now: Date, cachedOnly: Bool) throws(AuthenticationError) -> VerifiedToken? {
        guard token.utf8.count <= maximumTokenBytes else {
            throw .tokenTooLarge(bytes: token.utf8.count, limit: maximumTokenBytes)
        }
        let digest = SHA256Digest(ofUTF8: token)
        if let cached = cache.lookup(digest, now: now),
            cached.keySetGeneration == nil || cached.keySetGeneration == remoteKeys?.generation(for: cached.tenant)
        {
            TokenCacheStatistics.hits.wrappingAdd(1, ordering: .relaxed)
            return cached
        }
        if cachedOnly { return nil }
        TokenCacheStatistics.misses.wrappingAdd(1, ordering: .relaxed)
        let jws = try CompactJWS(parsing: token, maximumBytes: maximumTokenBytes)
        guard let algorithmName = jws.algorithmName else { throw .malformedToken("header has no string 'alg'") }
        guard algorithmName.lowercased() != "none" else { throw .algorithmNone }
        guard let algorithm = JWTAlgorithm(rawValue: algorithmName) else { throw .unsupportedAlgorithm(algorithmName) }
        let candidates = try selectKeys(jws)
        guard let first = candidates.first(where: { $0.key.algorithm == algorithm }) else {
            throw .algorithmMismatch(header: algorithmName, key: candidates[0].key.algorithm)
        }
        // Usually one key; a fetched set may hold several under one kid (each is tried).
        guard
            let entry = first.key.verify(signature: jws.signature, signingInput: jws.signingInput)
                ? first
                : candidates.dropFirst().first(where: {
                    $0.key.algorithm == algorithm && $0.key.verify(signature: jws.signature, signingInput: jws.signingInput)
                })
        else { throw .badSignature }
        var verified = try checkClaims(jws, tenant: entry.tenant, key: entry.key, now: now)
        verified.keySetGeneration = entry.keySetGeneration
        cache.store(digest, verified, now: now)
        return verified
    }

    /// The keys a token may be signed with (never empty): those of its `kid` in the keys of the tenant its issuer
    /// names, configured or fetched.
    private func selectKeys(_ jws: CompactJWS) throws(AuthenticationError) -> [KeyEntry] {
        if let kidValue = jws.header["kid"] {
            guard let kid = kidValue.stringValue else { throw .malformedToken("header 'kid' is not a string") }
            // Looked up in the keys of the tenant the issuer names: kids need not be unique across identity providers,
            // issuers are unique across tenants (found by review: another tenant's configured key of the same kid
            // was tried instead of the issuer's fetched one, and its tokens failed).
            if let issuer = jws.payload["iss"]?.stringValue, let tenant = tenantByIssuer[issuer] {
                var found: [KeyEntry] = []
                if let entry = keysByID[kid], entry.tenant == tenant { found.append(entry) }
                if let remoteKeys {
                    let fetched = remoteKeys.keySet(for: tenant)
                    for key in fetched.keys where key.keyID == kid {
                        found.append(KeyEntry(tenant: tenant, key: key, keySetGeneration: fetched.generation))
                    }
                }
                guard !found.isEmpty else { throw .unknownKeyID(kid) }
                return found
            }
            // An issuer no tenant has: the key's own tenant refuses it (wrong issuer) once the signature is checked.
            if let entry = keysByID[kid] { return [entry] }
            throw .unknownKeyID(kid)
        }
        // No kid: the issuer (still unverified, used only to pick a key) must have exactly one key.
        guard let issuer = jws.payload["iss"]?.stringValue else { throw .keyNotSelectable("token has neither 'kid' nor 'iss'") }
        guard let tenant = tenantByIssuer[issuer], let settings = tenants[tenant] else { throw .wrongIssuer(issuer) }
        let fetched = remoteKeys?.keySet(for: tenant) ?? (generation: 0, keys: [])
        let keys = settings.keys + fetched.keys
        guard keys.count == 1 else {
            throw .keyNotSelectable("token has no 'kid' and issuer '\(issuer)' has \(keys.count) keys")
        }
        return [KeyEntry(tenant: tenant, key: keys[0], keySetGeneration: settings.keys.isEmpty ? fetched.generation : nil)]
    }

    private func checkClaims(
        _ jws: CompactJWS, tenant: String, key: JWTVerificationKey, now: Date
    ) throws(AuthenticationError) -> VerifiedToken {
        guard let settings = tenants[tenant] else { throw .unknownTenant(tenant) }
        if let accepted = settings.tokenTypes {
            // A `typ` that is not a string is no type: refused here, ignored where no types are named (as PyJWT does;
            // found by the differential test).
            let type = jws.typeName
            guard let type, let parsed = TokenType(type), accepted.contains(parsed) else {
                throw .wrongTokenType(type ?? jws.header["typ"].map { "\($0)" }, accepted: accepted)
            }
        }
        let claims = jws.payload
        let current = Int64(now.timeIntervalSince1970.rounded(.down))
        let leeway = settings.leewaySeconds

        let expiry = try numericDate(claims, "exp")
        if let expiry {
            guard current < expiry + leeway else { throw .expired(exp: expiry, now: current) }
        } else if settings.requireExpiry {
            throw .missingClaim("exp")
        }
        let notBefore = try numericDate(claims, "nbf")
        if let notBefore, current + leeway < notBefore { throw .notYetValid(nbf: notBefore, now: current) }
        let issuedAt = try numericDate(claims, "iat")
        if let issuedAt, issuedAt > current + leeway { throw .issuedInFuture(iat: issuedAt, now: current) }

        let issuer = try string(claims, "iss", required: true)!
        guard settings.issuers.contains(issuer) else { throw .wrongIssuer(issuer) }
        let audiences = try audiences(claims)
        guard audiences.contains(settings.audience) || settings.resourceAudiences.contains(where: audiences.contains) else {
            throw .wrongAudience(expected: settings.audience)
        }

        let named = try string(claims, settings.tenantClaim, required: true)!
        guard tenants[named] != nil else {
            // Found by review: "unknown tenant" for a tenant the configuration has, with certificates only.
            guard tenantsWithoutTokens.contains(named) else { throw .unknownTenant(named) }
            throw .tenantMismatch("token names tenant '\(named)', which accepts no tokens, but is signed by a key of tenant '\(tenant)'")
        }
        guard named == tenant else {
            throw .tenantMismatch("token names tenant '\(named)' but is signed by a key of tenant '\(tenant)'")
        }
        let agent = try string(claims, settings.agentClaim, required: false)
        if let agent, !IdentifierRules.isValid(agent) {
            throw .invalidClaim(settings.agentClaim, reason: "is not a valid agent id (1-128 of A-Z a-z 0-9 . _ - : @)")
        }
        let facts = Principal.TokenFacts(
            issuer: issuer, subject: try string(claims, "sub", required: false), keyID: key.keyID,
            algorithm: key.algorithm, tokenID: try string(claims, "jti", required: false),
            issuedAt: issuedAt.map { Date(timeIntervalSince1970: Double($0)) },
            expiresAt: expiry.map { Date(timeIntervalSince1970: Double($0)) })
        return VerifiedToken(
            tenant: tenant, agent: agent, scopes: try scopes(claims), facts: facts,
            acceptedFrom: [notBefore, issuedAt].compactMap { $0 }.max().map { Date(timeIntervalSince1970: Double($0 - leeway)) },
            acceptedUntil: expiry.map { Date(timeIntervalSince1970: Double($0 + leeway)) })
    }

    private func numericDate(_ claims: JSONObject, _ name: String) throws(AuthenticationError) -> Int64? {
        guard let value = claims[name] else { return nil }
        guard let seconds = value.numberValue?.doubleValue, seconds.isFinite, abs(seconds) < 1e15 else {
            throw .invalidClaim(name, reason: "is not a NumericDate")
        }
        return Int64(seconds.rounded(.down))
    }

    private func string(_ claims: JSONObject, _ name: String, required: Bool) throws(AuthenticationError) -> String? {
        guard let value = claims[name] else {
            if required { throw .missingClaim(name) }
            return nil
        }
        guard let text = value.stringValue else { throw .invalidClaim(name, reason: "is not a string") }
        return text
    }

    private func audiences(_ claims: JSONObject) throws(AuthenticationError) -> [String] {
        switch claims["aud"] {
        case nil: throw .missingClaim("aud")
        case .string(let audience): return [audience]
        case .array(let elements):
            var result: [String] = []
            for element in elements {
                guard let text = element.stringValue else { throw .invalidClaim("aud", reason: "holds a non-string") }
                result.append(text)
            }
            return result
        default: throw .invalidClaim("aud", reason: "is neither a string nor an array of strings")
        }
    }

    private func scopes(_ claims: JSONObject) throws(AuthenticationError) -> Set<String> {
        var result = Set<String>()
        switch claims["scope"] {
        case nil: break
        case .string(let text): result.formUnion(text.split(separator: " ").map(String.init))
        default: throw .invalidClaim("scope", reason: "is not a space-separated string")
        }
        switch claims["scp"] {
        case nil: break
        case .string(let text): result.formUnion(text.split(separator: " ").map(String.init))
        case .array(let elements):
            for element in elements {
                guard let text = element.stringValue else { throw .invalidClaim("scp", reason: "holds a non-string") }
                result.insert(text)
            }
        default: throw .invalidClaim("scp", reason: "is neither a string nor an array of strings")
        }
        guard result.count <= Principal.maximumScopes else {
            throw .invalidClaim("scope", reason: "and scp name more than \(Principal.maximumScopes) scopes")
        }
        return result
    }
}

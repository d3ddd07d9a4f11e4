import Foundation
public import StrictJSON

/// One tenant's identity settings: which CAs vouch for its agents' certificates, and how its tokens are verified.
public struct TenantIdentity: Sendable {
    /// PEM CA bundles whose certificates anchor this tenant's agent certificates.
    public var clientCABundles: [String]
    /// PEM CRLs for those CAs.
    public var crlFiles: [String]
    /// How certificates name agents.
    public var certificateRules: CertificateIdentityRules
    /// How bearer tokens are verified; nil when the tenant accepts no tokens.
    public var jwt: TenantJWTSettings?

    /// A tenant from its parts.
    public init(clientCABundles: [String], crlFiles: [String], certificateRules: CertificateIdentityRules, jwt: TenantJWTSettings?) {
        self.clientCABundles = clientCABundles
        self.crlFiles = crlFiles
        self.certificateRules = certificateRules
        self.jwt = jwt
    }
}

/// Identity settings for every tenant, plus limits that apply to all of them.
public struct IdentityConfiguration: Sendable {
    /// Tenants by id.
    public var tenants: [String: TenantIdentity]
    /// Largest bearer token accepted, in bytes.
    public var maximumTokenBytes: Int
    /// How many verified tokens are remembered.
    public var tokenCacheCapacity: Int

    /// A configuration from its parts.
    public init(tenants: [String: TenantIdentity], maximumTokenBytes: Int = 8192, tokenCacheCapacity: Int = 10_000) {
        self.tenants = tenants
        self.maximumTokenBytes = maximumTokenBytes
        self.tokenCacheCapacity = tokenCacheCapacity
    }

    /// The authenticator these settings describe (validates kids and issuers across tenants).
    public func makeAuthenticator() throws(IdentityConfigurationError) -> Authenticator {
        Authenticator(
            certificates: CertificateAuthenticator(tenants: tenants.mapValues(\.certificateRules)),
            tokens: try JWTVerifier(
                tenants: tenants.compactMapValues(\.jwt), maximumTokenBytes: maximumTokenBytes,
                cacheCapacity: tokenCacheCapacity))
    }
}

extension IdentityConfiguration {
    /// Keys allowed in the `identity` section.
    static let identityKeys: Set<String> = [
        "audience", "spiffe_trust_domain", "max_token_bytes", "token_cache_size", "leeway_seconds",
    ]
    /// Keys allowed in a tenant object.
    static let tenantKeys: Set<String> = ["client_ca", "crl", "spiffe_trust_domain", "agent_from_common_name", "jwt"]
    static let jwtKeys: Set<String> = [
        "issuers", "audience", "tenant_claim", "agent_claim", "require_exp", "leeway_seconds", "keys", "jwks_file",
    ]
    static let keyKeys: Set<String> = ["kid", "alg", "public_key_file", "secret_file"]

    /// Reads the `identity` section (may be nil) and the `tenants` map of a gateway configuration document.
    /// Relative file paths are resolved against `baseDirectory`; every key file is read now, so a bad file fails
    /// at start-up, with the path of the setting in the message.
    /// `otherTenantKeys` are tenant keys that other parts of the configuration read (e.g. `upstream`).
    public static func read(
        identity: JSONObjectReader?, tenants: JSONObjectReader, baseDirectory: String, otherTenantKeys: Set<String> = []
    ) throws(JSONFieldError) -> IdentityConfiguration {
        try identity?.requireOnlyKeys(identityKeys)
        let audience = try identity?.string("audience") ?? "mcpgw"
        let trustDomain = try identity?.string("spiffe_trust_domain") ?? "mcpgw.dev"
        let leeway = try identity?.int("leeway_seconds") ?? 60
        var result: [String: TenantIdentity] = [:]
        for (tenant, reader) in try tenants.objectMembers() {
            guard IdentifierRules.isValid(tenant) else {
                throw JSONFieldError(path: reader.path, reason: "tenant id must be 1-128 of A-Z a-z 0-9 . _ - : @")
            }
            try reader.requireOnlyKeys(tenantKeys.union(otherTenantKeys))
            let paths = { (key: String) throws(JSONFieldError) -> [String] in
                (try reader.strings(key) ?? []).map { resolve($0, baseDirectory) }
            }
            let rules = CertificateIdentityRules(
                trustDomain: try reader.string("spiffe_trust_domain") ?? trustDomain,
                agentFromCommonName: try reader.bool("agent_from_common_name") ?? false)
            var jwt: TenantJWTSettings?
            if let jwtReader = try reader.object("jwt") {
                jwt = try readJWT(jwtReader, audience: audience, leeway: leeway, baseDirectory: baseDirectory)
            }
            result[tenant] = TenantIdentity(
                clientCABundles: try paths("client_ca"), crlFiles: try paths("crl"), certificateRules: rules, jwt: jwt)
        }
        return IdentityConfiguration(
            tenants: result, maximumTokenBytes: try identity?.int("max_token_bytes") ?? 8192,
            tokenCacheCapacity: try identity?.int("token_cache_size") ?? 10_000)
    }

    private static func readJWT(
        _ reader: JSONObjectReader, audience: String, leeway: Int, baseDirectory: String
    ) throws(JSONFieldError) -> TenantJWTSettings {
        try reader.requireOnlyKeys(jwtKeys)
        guard let issuers = try reader.strings("issuers"), !issuers.isEmpty else {
            throw JSONFieldError(path: reader.fieldPath("issuers"), reason: "needs at least one issuer")
        }
        var keys: [JWTVerificationKey] = []
        for keyReader in try reader.objects("keys") ?? [] {
            keys.append(try readKey(keyReader, baseDirectory: baseDirectory))
        }
        if let jwks = try reader.string("jwks_file") {
            let path = resolve(jwks, baseDirectory)
            do {
                keys += try JWTVerificationKey.jwks(try fileBytes(path))
            } catch {
                throw JSONFieldError(path: reader.fieldPath("jwks_file"), reason: "\(path): \(error)")
            }
        }
        guard !keys.isEmpty else {
            throw JSONFieldError(path: reader.path, reason: "needs at least one key ('keys' or 'jwks_file')")
        }
        return TenantJWTSettings(
            issuers: issuers, keys: keys, audience: try reader.string("audience") ?? audience,
            tenantClaim: try reader.string("tenant_claim") ?? "tenant", agentClaim: try reader.string("agent_claim") ?? "sub",
            requireExpiry: try reader.bool("require_exp") ?? true,
            leewaySeconds: Int64(try reader.int("leeway_seconds") ?? leeway))
    }

    private static func readKey(_ reader: JSONObjectReader, baseDirectory: String) throws(JSONFieldError) -> JWTVerificationKey {
        try reader.requireOnlyKeys(keyKeys)
        let kid = try reader.string("kid")
        var algorithm: JWTAlgorithm?
        if let name = try reader.string("alg") {
            guard let parsed = JWTAlgorithm(rawValue: name) else {
                throw JSONFieldError(path: reader.fieldPath("alg"), reason: "must be one of \(JWTAlgorithm.allCases.map(\.rawValue))")
            }
            algorithm = parsed
        }
        let publicKey = try reader.string("public_key_file")
        let secret = try reader.string("secret_file")
        do {
            switch (publicKey, secret) {
            case (let file?, nil):
                return try JWTVerificationKey.publicKey(pem: try fileBytes(resolve(file, baseDirectory)), keyID: kid, algorithm: algorithm)
            case (nil, let file?):
                guard algorithm == nil || algorithm == .hs256 else {
                    throw JSONFieldError(path: reader.fieldPath("alg"), reason: "a secret_file key is HS256")
                }
                var bytes = try fileBytes(resolve(file, baseDirectory))
                while bytes.last == UInt8(ascii: "\n") || bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
                return try JWTVerificationKey.hmac(secret: bytes, keyID: kid)
            default:
                throw JSONFieldError(path: reader.path, reason: "needs exactly one of public_key_file or secret_file")
            }
        } catch let error as JSONFieldError {
            throw error
        } catch {
            throw JSONFieldError(path: reader.path, reason: "\(error)")
        }
    }

    static func resolve(_ path: String, _ base: String) -> String {
        path.hasPrefix("/") || base.isEmpty ? path : base + "/" + path
    }

    static func fileBytes(_ path: String) throws(JWTKeyError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unreadable(path: path, reason: "missing or not readable")
        }
        return Array(data)
    }
}

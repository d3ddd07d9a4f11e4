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
    /// How opaque (non-JWT) bearer tokens are checked, if the tenant accepts them.
    public var introspection: IntrospectionSettings?

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
    /// What the gateway publishes as an OAuth protected resource, when `identity.public_url` is set.
    public var oauth: OAuthResources?
    /// The audience tokens name by default (`identity.audience`, default `mcpgw`).
    public var audience = "mcpgw"

    /// A configuration from its parts.
    public init(tenants: [String: TenantIdentity], maximumTokenBytes: Int = 8192, tokenCacheCapacity: Int = 10_000) {
        self.tenants = tenants
        self.maximumTokenBytes = maximumTokenBytes
        self.tokenCacheCapacity = tokenCacheCapacity
    }

    /// The authenticator these settings describe (validates kids and issuers across tenants); keys fetched over
    /// HTTPS are read from `remoteKeys`.
    public func makeAuthenticator(remoteKeys: RemoteKeyRing? = nil) throws(IdentityConfigurationError) -> Authenticator {
        Authenticator(
            certificates: CertificateAuthenticator(tenants: tenants.mapValues(\.certificateRules)),
            tokens: try JWTVerifier(
                tenants: tenants.compactMapValues(\.jwt), tenantsWithoutTokens: Set(tenants.filter { $0.value.jwt == nil }.keys),
                maximumTokenBytes: maximumTokenBytes,
                cacheCapacity: tokenCacheCapacity, remoteKeys: remoteKeys),
            tenants: Set(tenants.keys))
    }
}

extension IdentityConfiguration {
    /// Keys allowed in the `identity` section.
    static let identityKeys: Set<String> = [
        "audience", "spiffe_trust_domain", "max_token_bytes", "token_cache_size", "leeway_seconds", "public_url", "oauth",
    ]
    /// Keys allowed in a tenant object.
    static let tenantKeys: Set<String> = ["client_ca", "crl", "spiffe_trust_domain", "agent_from_common_name", "jwt", "oauth"]
    static let jwtKeys: Set<String> = [
        "issuers", "audience", "tenant_claim", "agent_claim", "require_exp", "leeway_seconds", "token_types", "keys", "jwks_file",
        "jwks_uri", "discovery", "ca_file", "jwks_min_refetch_seconds", "jwks_lifetime_seconds",
    ]
    static let oauthKeys: Set<String> = ["authorization_servers", "scopes_supported", "introspection"]
    static let introspectionKeys: Set<String> = [
        "url", "client_id", "client_secret_file", "ca_file", "cache_seconds", "cache_size", "agent_claim", "tenant_claim",
        "require_tenant_claim",
    ]
    static let keyKeys: Set<String> = ["kid", "alg", "public_key_file", "secret_file"]

    /// Reads the `identity` section (may be nil) and the `tenants` map of a gateway configuration document.
    /// Relative file paths are resolved against `baseDirectory`; every key file is read now, so a bad file fails
    /// at start-up, with the path of the setting in the message.
    /// `otherTenantKeys` are tenant keys that other parts of the configuration read (e.g. `upstream`).
    public static func read(
        identity: JSONObjectReader?, tenants: JSONObjectReader, baseDirectory: String, otherTenantKeys: Set<String> = [],
        mcpPath: String = "/mcp"
    ) throws(JSONFieldError) -> IdentityConfiguration {
        try identity?.requireOnlyKeys(identityKeys)
        let publicURL = try identity?.string("public_url").map { url throws(JSONFieldError) in
            try checkedURL(url, field: identity!.fieldPath("public_url"), originOnly: true)
        }
        var shared: ProtectedResource?
        if let reader = try identity?.object("oauth") {
            guard let publicURL else {
                throw JSONFieldError(path: reader.path, reason: "needs identity.public_url (the origin clients reach the gateway at)")
            }
            let (servers, scopes, introspection) = try readOAuth(reader, baseDirectory: baseDirectory)
            guard introspection == nil else {
                throw JSONFieldError(path: reader.fieldPath("introspection"), reason: "belongs in a tenant's oauth section")
            }
            shared = ProtectedResource(publicURL: publicURL, path: mcpPath, authorizationServers: servers, scopesSupported: scopes)
        }
        var tenantResources: [String: ProtectedResource] = [:]
        let audience = try identity?.string("audience") ?? "mcpgw"
        let trustDomain = try identity?.string("spiffe_trust_domain") ?? "mcpgw.dev"
        let leeway = try identity?.int("leeway_seconds", in: 0...3600) ?? 60
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
            var introspection: IntrospectionSettings?
            if let oauthReader = try reader.object("oauth") {
                guard let publicURL else {
                    throw JSONFieldError(
                        path: oauthReader.path, reason: "needs identity.public_url (the origin clients reach the gateway at)")
                }
                let (servers, scopes, introspected) = try readOAuth(oauthReader, baseDirectory: baseDirectory)
                let resource = ProtectedResource(
                    publicURL: publicURL, path: OAuthResources.tenantPrefix + tenant + mcpPath, authorizationServers: servers,
                    scopesSupported: scopes)
                tenantResources[tenant] = resource
                jwt?.resourceAudiences.append(resource.resource)
                introspection = introspected
            }
            if let shared { jwt?.resourceAudiences.append(shared.resource) }
            var identity = TenantIdentity(
                clientCABundles: try paths("client_ca"), crlFiles: try paths("crl"), certificateRules: rules, jwt: jwt)
            identity.introspection = introspection
            result[tenant] = identity
        }
        // An introspection endpoint that answers for more than one tenant (another tenant introspects at the same URL,
        // however it is spelled; another tenant names one of its authorization servers too; or it belongs to a
        // gateway-wide authorization server) must say whose token it is: its answers need the tenant claim, or any of
        // its users would become a principal of the tenant whose endpoint was asked. Endpoints on one host with paths
        // of their own (Keycloak realms) are separate servers, told apart by their `iss`.
        let sharedOrigins = Set((shared?.authorizationServers ?? []).map(Self.origin))
        let sharedServers = Set((shared?.authorizationServers ?? []).map(Self.normalized))
        func servers(_ tenant: String) -> Set<String> { Set((tenantResources[tenant]?.authorizationServers ?? []).map(Self.normalized)) }
        // Every server a tenant takes tokens from: its authorization servers, and the issuers its JWTs may name (found
        // by review: a server one tenant trusted as its JWT issuer, and another introspected at, answered for both
        // without naming the tenant, and the first tenant's users became the second's).
        func trusted(_ tenant: String) -> Set<String> {
            var all = servers(tenant)
            if let jwt = result[tenant]?.jwt {
                all.formUnion(jwt.issuers.map(Self.normalized))
                if case .discovery(let issuer)? = jwt.remoteKeys?.source { all.insert(Self.normalized(issuer)) }
            }
            return all
        }
        for (tenant, identity) in result {
            guard let url = identity.introspection?.url else { continue }
            let endpoint = Self.normalized(url)
            let others = result.filter { $0.key != tenant }
            let sharesEndpoint = others.values.contains { $0.introspection.map { Self.normalized($0.url) == endpoint } ?? false }
            let sharesServer = others.keys.contains { !trusted($0).isDisjoint(with: servers(tenant)) }
            if sharesEndpoint || sharesServer || sharedOrigins.contains(Self.origin(url))
                || !sharedServers.isDisjoint(with: servers(tenant))
            {
                result[tenant]?.introspection?.requiresTenantClaim = true
            }
        }
        var configuration = IdentityConfiguration(
            tenants: result, maximumTokenBytes: try identity?.int("max_token_bytes", in: 256...1_048_576) ?? 8192,
            tokenCacheCapacity: try identity?.int("token_cache_size", in: 0...10_000_000) ?? 10_000)
        configuration.audience = audience
        if let publicURL {
            configuration.oauth = OAuthResources(publicURL: publicURL, shared: shared, tenants: tenantResources)
        }
        return configuration
    }

    private static func readOAuth(
        _ reader: JSONObjectReader, baseDirectory: String
    ) throws(JSONFieldError) -> (servers: [String], scopes: [String], introspection: IntrospectionSettings?) {
        try reader.requireOnlyKeys(oauthKeys)
        guard let servers = try reader.strings("authorization_servers"), !servers.isEmpty else {
            throw JSONFieldError(path: reader.fieldPath("authorization_servers"), reason: "needs at least one authorization server")
        }
        for (index, server) in servers.enumerated() {
            _ = try checkedURL(server, field: reader.fieldPath("authorization_servers") + "[\(index)]", originOnly: false)
        }
        var introspection: IntrospectionSettings?
        if let settings = try reader.object("introspection") {
            try settings.requireOnlyKeys(introspectionKeys)
            guard let url = try settings.string("url") else { throw JSONFieldError(path: settings.fieldPath("url"), reason: "is required") }
            _ = try checkedURL(url, field: settings.fieldPath("url"), originOnly: false)
            guard let clientID = try settings.string("client_id"), let secretFile = try settings.string("client_secret_file") else {
                throw JSONFieldError(path: settings.path, reason: "needs client_id and client_secret_file")
            }
            var secret: [UInt8]
            do {
                secret = try fileBytes(resolve(secretFile, baseDirectory))
            } catch {
                throw JSONFieldError(path: settings.fieldPath("client_secret_file"), reason: "\(error)")
            }
            while secret.last == UInt8(ascii: "\n") || secret.last == UInt8(ascii: "\r") { secret.removeLast() }
            let cacheSeconds = try settings.int("cache_seconds") ?? 60
            let cacheSize = try settings.int("cache_size") ?? 10_000
            guard (0...3600).contains(cacheSeconds), (1...1_000_000).contains(cacheSize) else {
                throw JSONFieldError(path: settings.path, reason: "cache_seconds must be 0-3600 and cache_size 1-1000000")
            }
            introspection = IntrospectionSettings(
                url: url, clientID: clientID, clientSecret: String(decoding: secret, as: UTF8.self),
                caFile: try settings.string("ca_file").map { resolve($0, baseDirectory) }, cacheSeconds: cacheSeconds,
                cacheSize: cacheSize, agentClaim: try settings.string("agent_claim") ?? "sub")
            introspection?.tenantClaim = try settings.string("tenant_claim") ?? "tenant"
            introspection?.requiresTenantClaim = try settings.bool("require_tenant_claim") ?? false
            introspection?.issuers = servers
        }
        return (servers, try reader.strings("scopes_supported") ?? [], introspection)
    }

    /// The origin (`https://host[:port]`, lower-cased) of an https URL.
    /// `url` as one spelling: the origin as `origin` writes it, then the path without a trailing `/` or `?`.
    static func normalized(_ url: String) -> String {
        let rest = url.dropFirst(url.hasPrefix("https://") ? 8 : 0)
        var path = String(rest.drop { $0 != "/" && $0 != "?" })
        while path.hasSuffix("/") || path.hasSuffix("?") { path.removeLast() }
        return origin(url) + path
    }

    static func origin(_ url: String) -> String {
        let rest = url.dropFirst(url.hasPrefix("https://") ? 8 : 0)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }.lowercased()
        // The default port said or not is the same origin.
        return "https://" + (authority.hasSuffix(":443") ? String(authority.dropLast(4)) : authority)
    }

    /// `url` when it is an `https` URL (only an origin, without path, query or trailing slash, with `originOnly`).
    /// Plain `http` is refused: tokens and keys travel over these URLs.
    static func checkedURL(_ url: String, field: String, originOnly: Bool) throws(JSONFieldError) -> String {
        guard url.hasPrefix("https://"), url.count > 8, !url.contains(where: { $0 == " " || $0 == "#" || $0.isNewline }) else {
            throw JSONFieldError(path: field, reason: "must be an https:// URL")
        }
        let rest = url.dropFirst(8)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        guard !authority.isEmpty, !authority.contains("@") else {
            throw JSONFieldError(path: field, reason: "needs a host (and no user information)")
        }
        if originOnly && authority.count != rest.count {
            throw JSONFieldError(path: field, reason: "must be an origin (https://host[:port]) without a path or trailing slash")
        }
        return url
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
        var remote: RemoteKeySettings?
        let jwksURI = try reader.string("jwks_uri")
        let discovery = try reader.bool("discovery") ?? false
        switch (jwksURI, discovery) {
        case (let uri?, false):
            remote = RemoteKeySettings(source: .jwks(try checkedURL(uri, field: reader.fieldPath("jwks_uri"), originOnly: false)))
        case (nil, true):
            guard issuers.count == 1 else {
                throw JSONFieldError(
                    path: reader.fieldPath("discovery"), reason: "needs exactly one issuer (whose metadata names the JWKS)")
            }
            remote = RemoteKeySettings(
                source: .discovery(issuer: try checkedURL(issuers[0], field: reader.fieldPath("issuers") + "[0]", originOnly: false)))
        case (_?, true):
            throw JSONFieldError(path: reader.path, reason: "jwks_uri and discovery exclude each other")
        case (nil, false):
            for key in ["ca_file", "jwks_min_refetch_seconds", "jwks_lifetime_seconds"] where reader.object[key] != nil {
                throw JSONFieldError(path: reader.fieldPath(key), reason: "applies only with jwks_uri or discovery")
            }
        }
        if var settings = remote {
            settings.caFile = try reader.string("ca_file").map { resolve($0, baseDirectory) }
            settings.minimumRefetchSeconds = try reader.int("jwks_min_refetch_seconds") ?? settings.minimumRefetchSeconds
            settings.defaultLifetimeSeconds = try reader.int("jwks_lifetime_seconds") ?? settings.defaultLifetimeSeconds
            guard (1...3600).contains(settings.minimumRefetchSeconds), (10...86_400).contains(settings.defaultLifetimeSeconds) else {
                throw JSONFieldError(
                    path: reader.path, reason: "jwks_min_refetch_seconds must be 1-3600 and jwks_lifetime_seconds 10-86400")
            }
            remote = settings
        }
        guard !keys.isEmpty || remote != nil else {
            throw JSONFieldError(path: reader.path, reason: "needs at least one key ('keys', 'jwks_file', 'jwks_uri' or 'discovery')")
        }
        var settings = TenantJWTSettings(
            issuers: issuers, keys: keys, audience: try reader.string("audience") ?? audience,
            tenantClaim: try reader.string("tenant_claim") ?? "tenant", agentClaim: try reader.string("agent_claim") ?? "sub",
            requireExpiry: try reader.bool("require_exp") ?? true,
            leewaySeconds: Int64(try reader.int("leeway_seconds", in: 0...3600) ?? leeway))
        settings.remoteKeys = remote
        if let types = try reader.strings("token_types") {
            guard !types.isEmpty else {
                throw JSONFieldError(path: reader.fieldPath("token_types"), reason: "needs at least one type (leave it out to accept any)")
            }
            settings.tokenTypes = try types.enumerated().map { (index, text) throws(JSONFieldError) in
                guard let type = TokenType(text) else {
                    throw JSONFieldError(
                        path: reader.fieldPath("token_types") + "[\(index)]",
                        reason: "'\(text.prefix(64))' is not a media type name (e.g. at+jwt)")
                }
                return type
            }
        }
        return settings
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

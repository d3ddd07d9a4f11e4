/// Where a tenant's token signing keys are fetched from over HTTPS, and how often.
public struct RemoteKeySettings: Sendable, Equatable {
    /// How the JWKS is found.
    public enum Source: Sendable, Equatable {
        /// This JWKS URL.
        case jwks(String)
        /// The issuer's metadata (`/.well-known/openid-configuration`, then RFC 8414
        /// `/.well-known/oauth-authorization-server`), whose `jwks_uri` names the JWKS.
        case discovery(issuer: String)
    }

    /// Where the keys come from.
    public var source: Source
    /// The PEM CA bundle that vouches for the key server (nil: the system's).
    public var caFile: String?
    /// The shortest time between two fetches caused by an unknown `kid` (a flood of unknown kids causes no more).
    public var minimumRefetchSeconds: Int
    /// How long a fetched set is used when the server's `Cache-Control` says nothing (and the bounds of what it says).
    public var defaultLifetimeSeconds: Int
    /// Largest metadata or JWKS document accepted, in bytes.
    public var maximumBytes: Int

    /// Settings with the defaults: a refetch at most every 30 s, a set kept 5 minutes unless `Cache-Control` says
    /// otherwise, documents up to 256 KiB.
    public init(
        source: Source, caFile: String? = nil, minimumRefetchSeconds: Int = 30, defaultLifetimeSeconds: Int = 300,
        maximumBytes: Int = 256 * 1024
    ) {
        self.source = source
        self.caFile = caFile
        self.minimumRefetchSeconds = minimumRefetchSeconds
        self.defaultLifetimeSeconds = defaultLifetimeSeconds
        self.maximumBytes = maximumBytes
    }
}

/// RFC 7662 token introspection for a tenant's opaque (non-JWT) tokens.
public struct IntrospectionSettings: Sendable, Equatable {
    /// The introspection endpoint (https).
    public var url: String
    /// The gateway's client id at the authorization server.
    public var clientID: String
    /// Its secret (read from a file at start-up), sent with HTTP Basic authentication.
    public var clientSecret: String
    /// The PEM CA bundle that vouches for the endpoint (nil: the system's).
    public var caFile: String?
    /// How long an answer is remembered (never past the token's `exp`).
    public var cacheSeconds: Int
    /// How many answers are remembered.
    public var cacheSize: Int
    /// The claim of the answer that names the agent (default `sub`).
    public var agentClaim: String
    /// The claim of the answer that names the tenant (default `tenant`): an answer that names another tenant is
    /// refused.
    public var tenantClaim: String = "tenant"
    /// Whether an answer without the tenant claim is refused: set when the endpoint answers for more than this tenant
    /// (another tenant introspects there, or it is one of the gateway-wide authorization servers), or asked for.
    public var requiresTenantClaim = false
    /// The tenant's authorization servers: an answer's `iss`, when it has one, must be one of them.
    public var issuers: [String] = []

    /// Settings from their parts.
    public init(
        url: String, clientID: String, clientSecret: String, caFile: String? = nil, cacheSeconds: Int = 60, cacheSize: Int = 10_000,
        agentClaim: String = "sub"
    ) {
        self.url = url
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.caFile = caFile
        self.cacheSeconds = cacheSeconds
        self.cacheSize = cacheSize
        self.agentClaim = agentClaim
    }
}

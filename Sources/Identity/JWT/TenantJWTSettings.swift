/// How one tenant's bearer tokens are verified.
public struct TenantJWTSettings: Sendable {
    /// Accepted `iss` values. Each issuer belongs to exactly one tenant.
    public var issuers: [String]
    /// Keys that may sign this tenant's tokens; `kid`s are unique across all tenants.
    public var keys: [JWTVerificationKey]
    /// A value `aud` must contain: this, or one of `resourceAudiences`.
    public var audience: String
    /// The canonical URIs of the OAuth protected resources that serve this tenant (RFC 8707): a token issued for
    /// one of them is accepted too.
    public var resourceAudiences: [String] = []
    /// Where more keys are fetched over HTTPS, if anywhere (they then live in the verifier's `RemoteKeyRing`).
    public var remoteKeys: RemoteKeySettings?
    /// Claim that names the tenant (default `tenant`).
    public var tenantClaim: String
    /// Claim that names the agent (default `sub`).
    public var agentClaim: String
    /// Whether tokens without `exp` are refused (default true).
    public var requireExpiry: Bool
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds (default 60).
    public var leewaySeconds: Int64

    /// Settings with the defaults above.
    public init(
        issuers: [String], keys: [JWTVerificationKey], audience: String, tenantClaim: String = "tenant",
        agentClaim: String = "sub", requireExpiry: Bool = true, leewaySeconds: Int64 = 60
    ) {
        self.issuers = issuers
        self.keys = keys
        self.audience = audience
        self.tenantClaim = tenantClaim
        self.agentClaim = agentClaim
        self.requireExpiry = requireExpiry
        self.leewaySeconds = leewaySeconds
    }
}

/// A configuration that cannot be used, with the reason.
public struct IdentityConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public let reason: String

    /// An error with `reason`.
    public init(_ reason: String) { self.reason = reason }

    public var description: String { reason }
}

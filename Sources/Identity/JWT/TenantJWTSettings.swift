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
    /// The header `typ` values accepted, as `TokenType`s; nil accepts any `typ` or none (the default). Set it to
    /// `at+jwt` (RFC 9068) where the issuer types its access tokens, so that its ID tokens and other JWTs it signs for
    /// the same audience are refused (RFC 8725 §3.11).
    public var tokenTypes: [TokenType]? = nil

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

/// A JWT header `typ` value, compared as RFC 7515 §4.1.9 says: case-insensitively, with or without the
/// `application/` prefix.
public struct TokenType: Sendable, Hashable, CustomStringConvertible {
    /// The media type's subtype, lowercased (`at+jwt` for `application/at+JWT`).
    public let name: String

    /// The type `text` names, or nil when `text` is not a media type name (empty, or holding blanks, controls or
    /// characters other than a subtype's).
    public init?(_ text: String) {
        var lowered = text.lowercased()
        if lowered.hasPrefix("application/") { lowered.removeFirst("application/".count) }
        // RFC 6838 §4.2 restricted names: letters, digits and ! # $ & - ^ _ . +
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789!#$&-^_.+")
        guard !lowered.isEmpty, lowered.count <= 127, lowered.allSatisfy(allowed.contains) else { return nil }
        name = lowered
    }

    public var description: String { name }
}

/// A configuration that cannot be used, with the reason.
public struct IdentityConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public let reason: String

    /// An error with `reason`.
    public init(_ reason: String) { self.reason = reason }

    public var description: String { reason }
}

public import struct Foundation.Date

/// What a verified token says: its tenant (checked against the key's tenant), agent (if it names one), scopes and
/// the facts an audit record needs.
public struct VerifiedToken: Sendable, Hashable {
    /// The tenant, equal to the tenant of the key that verified the token.
    public let tenant: String
    /// The agent named by the agent claim, if present.
    public let agent: String?
    /// Scopes from `scope` and/or `scp`.
    public let scopes: Set<String>
    /// Audit facts.
    public let facts: Principal.TokenFacts
    /// The earliest instant the token is accepted (`nbf`/`iat` minus leeway); nil when it names neither.
    public let acceptedFrom: Date?
    /// The instant after which the token (plus leeway) is no longer accepted; nil when it has no `exp`.
    public let acceptedUntil: Date?
    /// For a token verified by a key fetched over HTTPS: the generation of its tenant's fetched key set then. A cached
    /// answer is used only while that set is still the one in force (a withdrawn key's tokens are verified again,
    /// and refused).
    public var keySetGeneration: Int?
}

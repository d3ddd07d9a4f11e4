/// How a tenant's client certificates name their agent.
public struct CertificateIdentityRules: Sendable, Hashable {
    /// The SPIFFE trust domain agent ids must use (`spiffe://<trustDomain>/tenant/<t>/agent/<a>`).
    public var trustDomain: String
    /// Whether a certificate without a SPIFFE SAN URI may name its agent in the subject CN. Off by default: a CN
    /// is free text that many CAs fill without checks.
    public var agentFromCommonName: Bool

    /// Rules for `trustDomain`, SPIFFE ids only unless `agentFromCommonName`.
    public init(trustDomain: String, agentFromCommonName: Bool = false) {
        self.trustDomain = trustDomain
        self.agentFromCommonName = agentFromCommonName
    }
}

public import TLS

public import struct Foundation.Date

/// Maps a verified client certificate to a principal.
///
/// The tenant is the one whose CA bundle anchored the chain (the TLS layer reports it). The agent comes from the
/// single SPIFFE SAN URI `spiffe://<trust-domain>/tenant/<tenant>/agent/<agent>`, whose tenant must be that same
/// tenant: a certificate signed by tenant A's CA that names tenant B is refused. The CN is used only where allowed.
public struct CertificateAuthenticator: Sendable {
    private let tenants: [String: CertificateIdentityRules]

    /// An authenticator for these tenants (tenant id → rules).
    public init(tenants: [String: CertificateIdentityRules]) {
        self.tenants = tenants
    }

    /// The principal for `certificate` at time `now`. The TLS handshake checked the validity period once; a
    /// keep-alive connection outlives that check, so every request checks it again.
    public func principal(for certificate: PeerCertificate, now: Date) throws(AuthenticationError) -> Principal {
        guard let tenant = certificate.trustAnchorLabel else {
            throw .certificateRefused("no tenant CA anchored the certificate chain")
        }
        guard let rules = tenants[tenant] else { throw .unknownTenant(tenant) }
        let leaf = certificate.leaf
        // Found by review: a CA certificate a tenant's CA issued by mistake was accepted as an agent, and its key could
        // then issue certificates naming any other agent of the tenant.
        guard !leaf.canIssueCertificates else {
            throw .certificateRefused("the client certificate is a CA certificate (CA:TRUE or keyCertSign): an agent's cannot be")
        }
        // …and one such certificate that issued another's: an issuer between the leaf and the tenant's CA that names an
        // agent is an agent's certificate, not an issuing CA.
        for issuer in certificate.verifiedChain.dropFirst().dropLast()
        where issuer.uris.contains(where: { SPIFFEID(uri: $0) != nil }) {
            throw .certificateRefused("the chain's issuer \(issuer.subject) names an agent: an agent's certificate cannot issue others")
        }
        guard now < leaf.notAfter else { throw .certificateRefused("the client certificate expired at \(leaf.notAfter)") }
        guard now >= leaf.notBefore else { throw .certificateRefused("the client certificate is valid from \(leaf.notBefore) only") }
        let spiffeURIs = leaf.uris.filter { $0.lowercased().hasPrefix("spiffe:") }
        let agent: String
        var spiffeID: String?
        switch spiffeURIs.count {
        case 0:
            guard rules.agentFromCommonName else {
                throw .certificateRefused("no SPIFFE id (SAN URI spiffe://\(rules.trustDomain)/tenant/\(tenant)/agent/<agent>)")
            }
            guard let commonName = Self.commonName(leaf.subject), IdentifierRules.isValid(commonName) else {
                throw .certificateRefused("subject CN is missing or not a valid agent id")
            }
            agent = commonName
        case 1:
            guard let id = SPIFFEID(uri: spiffeURIs[0]) else {
                throw .certificateRefused("SAN URI '\(spiffeURIs[0])' is not spiffe://<domain>/tenant/<tenant>/agent/<agent>")
            }
            guard id.trustDomain == rules.trustDomain else {
                throw .certificateRefused("SPIFFE trust domain '\(id.trustDomain)' is not '\(rules.trustDomain)'")
            }
            // A certificate at odds with itself, not two credentials that disagree (found by review: a certificate
            // alone got "the presented credentials name different callers").
            guard id.tenant == tenant else {
                throw .certificateRefused("certificate chains to the CA of tenant '\(tenant)' but names tenant '\(id.tenant)'")
            }
            guard IdentifierRules.isValid(id.agent) else { throw .certificateRefused("agent id '\(id.agent)' is not valid") }
            agent = id.agent
            spiffeID = id.description
        default:
            throw .certificateRefused("the certificate carries \(spiffeURIs.count) SPIFFE ids; exactly one is allowed")
        }
        let facts = Principal.CertificateFacts(
            subject: leaf.subject, issuer: leaf.issuer, serialNumber: leaf.serialNumber,
            sha256Fingerprint: leaf.sha256Fingerprint, spiffeID: spiffeID, notAfter: leaf.notAfter)
        return Principal(
            tenant: tenant, agent: agent, method: .mtls, scopes: [], expiresAt: leaf.notAfter, certificate: facts,
            token: nil)
    }

    /// The CN of an RFC 2253 subject (`CN=bot1,O=...`), if there is exactly one and it has no escapes.
    static func commonName(_ subject: String) -> String? {
        // Split at the separators RFC 2253 does not escape (`,` between RDNs, `+` inside one): an escaped `\,` is
        // part of a value, so `OU=x\,CN=admin` is one OU, not a CN.
        var attributes: [String] = []
        var current = ""
        var escaped = false
        for character in subject {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                current.append(character)
                escaped = true
            } else if character == "," || character == "+" {
                attributes.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        attributes.append(current)
        let names = attributes.filter { $0.hasPrefix("CN=") }
        guard names.count == 1, !names[0].contains("\\") else { return nil }
        return String(names[0].dropFirst(3))
    }
}

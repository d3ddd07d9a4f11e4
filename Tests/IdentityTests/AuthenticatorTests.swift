import Foundation
import TLS
import TestSupport
import Testing

@testable import Identity

@Suite("Certificate identity and combined authentication")
struct AuthenticatorTests {
    let authenticator: Authenticator

    init() throws {
        let rules = CertificateIdentityRules(trustDomain: "mcpgw.dev")
        authenticator = Authenticator(
            certificates: CertificateAuthenticator(tenants: ["acme": rules, "globex": rules]),
            tokens: try DevKeys.verifier())
    }

    func certificate(_ path: String) throws -> PeerCertificate {
        try #require(try DevTLS.verifiedCertificate(path), "handshake with \(path) failed")
    }

    func failure(certificate: PeerCertificate?, token: String?) -> AuthenticationError? {
        do {
            _ = try authenticator.authenticate(certificate: certificate, bearerToken: token, now: DevKeys.now)
            return nil
        } catch {
            return error
        }
    }

    @Test("an acme agent certificate becomes acme/bot1 by SPIFFE id")
    func certificateOnly() throws {
        let principal = try authenticator.authenticate(certificate: try certificate("acme/agents/bot1"), bearerToken: nil, now: DevKeys.now)
        #expect(principal.tenant == "acme")
        #expect(principal.agent == "bot1")
        #expect(principal.method == .mtls)
        #expect(principal.certificate?.spiffeID == "spiffe://mcpgw.dev/tenant/acme/agent/bot1")
        #expect(principal.certificate?.sha256Fingerprint.count == 64)
    }

    @Test("a globex agent certificate becomes globex/bot1")
    func globex() throws {
        let principal = try authenticator.authenticate(
            certificate: try certificate("globex/agents/bot1"), bearerToken: nil, now: DevKeys.now)
        #expect(principal.tenant == "globex")
    }

    @Test("a certificate that chains to acme's CA but names tenant globex is refused")
    func certificateNamesOtherTenant() throws {
        #expect(failure(certificate: try certificate("acme/agents/names-globex"), token: nil)?.code == "certificate_refused")
    }

    @Test("a token alone authenticates; with no credential at all, the caller is refused")
    func tokenOnly() throws {
        let token = try DevKeys.rsaMinter().mint(DevKeys.claims())
        let principal = try authenticator.authenticate(certificate: nil, bearerToken: token, now: DevKeys.now)
        #expect(principal.method == .jwt)
        #expect(principal.agent == "bot1")
        #expect(principal.token?.keyID == "acme-rs256")
        #expect(failure(certificate: nil, token: nil)?.code == "no_credentials")
    }

    @Test("certificate and token of the same agent: both")
    func both() throws {
        let token = try DevKeys.rsaMinter().mint(DevKeys.claims())
        let principal = try authenticator.authenticate(
            certificate: try certificate("acme/agents/bot1"), bearerToken: token, now: DevKeys.now)
        #expect(principal.method == .both)
        #expect(principal.scopes == ["tools:read"])
    }

    @Test("a tenant-A token with a tenant-B certificate is refused")
    func crossTenant() throws {
        let acmeToken = try DevKeys.rsaMinter("acme").mint(DevKeys.claims(tenant: "acme"))
        #expect(failure(certificate: try certificate("globex/agents/bot1"), token: acmeToken)?.code == "tenant_mismatch")
        let globexToken = try DevKeys.rsaMinter("globex").mint(DevKeys.claims(tenant: "globex"))
        #expect(failure(certificate: try certificate("acme/agents/bot1"), token: globexToken)?.code == "tenant_mismatch")
    }

    @Test("same tenant, different agents: refused")
    func agentMismatch() throws {
        let token = try DevKeys.rsaMinter().mint(DevKeys.claims(agent: "bot2"))
        #expect(failure(certificate: try certificate("acme/agents/bot1"), token: token)?.code == "agent_mismatch")
    }

    @Test("a certificate without a SPIFFE id is refused unless the tenant allows the CN")
    func commonName() throws {
        let cnOnly = try certificate("acme/agents/cn-only")
        #expect(failure(certificate: cnOnly, token: nil)?.code == "certificate_refused")
        let lenient = CertificateAuthenticator(tenants: [
            "acme": CertificateIdentityRules(trustDomain: "mcpgw.dev", agentFromCommonName: true)
        ])
        let principal = try lenient.principal(for: cnOnly, now: Date())
        #expect(principal.agent == "cn-only")
        #expect(principal.certificate?.spiffeID == nil)
    }

    @Test("a certificate past its notAfter (or before its notBefore) is refused on each request, not only at the handshake")
    func validityPeriod() throws {
        let bot1 = try certificate("acme/agents/bot1")
        let authenticator = CertificateAuthenticator(tenants: ["acme": CertificateIdentityRules(trustDomain: "mcpgw.dev")])
        #expect(try authenticator.principal(for: bot1, now: bot1.leaf.notAfter.addingTimeInterval(-1)).agent == "bot1")
        #expect {
            try authenticator.principal(for: bot1, now: bot1.leaf.notAfter.addingTimeInterval(1))
        } throws: { "\($0)".contains("expired") }
        #expect {
            try authenticator.principal(for: bot1, now: bot1.leaf.notBefore.addingTimeInterval(-1))
        } throws: { "\($0)".contains("valid from") }
    }

    @Test(
        "the CN is read from the subject's RDNs as RFC 2253 escapes them: a CN inside another attribute's value is not one",
        arguments: [
            ("CN=bot1,O=Acme", "bot1"), ("O=Acme\\, Inc.,CN=bot1", "bot1"), ("OU=x\\,CN=admin", nil), ("OU=x\\,CN=admin,O=Acme", nil),
            ("CN=a\\,b", nil), ("CN=bot1,CN=bot2", nil), ("OU=x+CN=bot3", "bot3"), ("O=Acme", nil),
        ] as [(String, String?)])
    func commonNameParsing(subject: String, expected: String?) {
        #expect(CertificateAuthenticator.commonName(subject) == expected)
    }

    @Test("a certificate with two SPIFFE ids is refused: an agent has one identity")
    func twoSPIFFEIDs() throws {
        let error = failure(certificate: try certificate("acme/agents/two-ids"), token: nil)
        #expect(error?.code == "certificate_refused")
        #expect("\(error.map { "\($0)" } ?? "")".contains("2 SPIFFE ids"))
    }

    @Test("a SPIFFE id from another trust domain is refused")
    func trustDomain() throws {
        let otherDomain = CertificateAuthenticator(tenants: ["acme": CertificateIdentityRules(trustDomain: "other.dev")])
        #expect {
            try otherDomain.principal(for: try certificate("acme/agents/bot1"), now: Date())
        } throws: { "\($0)".contains("trust domain") }
    }

    @Test(
        "SPIFFE id parsing refuses lookalikes",
        arguments: [
            "spiffe://mcpgw.dev/tenant/acme/agent/bot1/extra", "spiffe://mcpgw.dev/tenant/acme/agent/",
            "spiffe://mcpgw.dev/tenant/acme/agent/..",
            "spiffe://mcpgw.dev/tenant/acme/agent/b%6ft1", "spiffe://MCPGW.dev/tenant/acme/agent/bot1",
            "spiffe://mcpgw.dev/TENANT/acme/agent/bot1",
            "https://mcpgw.dev/tenant/acme/agent/bot1",
        ])
    func spiffeLookalikes(uri: String) {
        #expect(SPIFFEID(uri: uri) == nil)
    }

    @Test("SPIFFE id parsing accepts the mcpgw shape")
    func spiffe() {
        let id = SPIFFEID(uri: "spiffe://mcpgw.dev/tenant/acme/agent/bot-1.a_b")
        #expect(id?.tenant == "acme")
        #expect(id?.agent == "bot-1.a_b")
    }
}

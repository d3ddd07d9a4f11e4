import Foundation
import TestSupport
import Testing

@testable import Identity
@testable import TLS

@Suite("Certificate identity and combined authentication")
struct AuthenticatorTests {
    let authenticator: Authenticator

    init() throws {
        let rules = CertificateIdentityRules(trustDomain: "mcpgw.dev")
        authenticator = Authenticator(
            certificates: CertificateAuthenticator(tenants: ["acme": rules, "globex": rules]),
            tokens: try DevKeys.verifier(), tenants: ["acme", "globex"])
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

/// Certificates a tenant's CA should never have issued to an agent, made with the openssl CLI at test time.
@Suite("Agent certificates that can issue others")
struct IssuingAgentCertificateTests {
    /// A P-256 key and a certificate for acme agent `agent`, signed by `issuer` (certificate and key files) with the
    /// extensions `extensions` (openssl config lines), written into `directory`: (certificate, key) paths.
    static func issue(
        _ agent: String, by issuer: (String, String), extensions: String, in directory: String
    ) async throws -> (String, String) {
        let base = directory + "/" + agent
        try (extensions + "\nsubjectAltName=URI:spiffe://mcpgw.dev/tenant/acme/agent/\(agent)\nextendedKeyUsage=clientAuth\n")
            .write(toFile: base + ".ext", atomically: true, encoding: .utf8)
        for command in [
            [
                "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                "/O=mcpgw development/CN=\(agent)",
                "-keyout", base + ".key", "-out", base + ".csr",
            ],
            [
                "openssl", "x509", "-req", "-in", base + ".csr", "-CA", issuer.0, "-CAkey", issuer.1, "-set_serial",
                String(UInt32.random(in: 1...UInt32.max)), "-days", "30", "-extfile", base + ".ext", "-out", base + ".pem",
            ],
        ] {
            let result = try await ExternalProcess.run(command)
            try #require(result.status == 0, "\(command.joined(separator: " ")): \(result.stderr)")
        }
        return (base + ".pem", base + ".key")
    }

    @Test("a CA:TRUE or keyCertSign agent certificate is refused, and so is a leaf it issued for another agent")
    func refused() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("issuing-agents-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let acmeCA = (DevPKI.tenantCA("acme"), DevPKI.path("acme/ca.key"))
        let authenticator = try AuthenticatorTests().authenticator
        func principal(_ chain: String, _ key: String) throws -> Result<Principal, AuthenticationError> {
            let certificate = try #require(try DevTLS.verifiedCertificate(chainFile: chain, keyFile: key), "handshake failed")
            return Result { () throws(AuthenticationError) in try authenticator.certificates.principal(for: certificate, now: Date()) }
        }
        // An ordinary agent certificate made the same way is accepted: the refusals below are for what they say.
        let plain = try await Self.issue("bot8", by: acmeCA, extensions: "basicConstraints=critical,CA:FALSE", in: directory)
        #expect(try principal(plain.0, plain.1).map(\.agent) == .success("bot8"))
        // Found by review: accepted as acme/bot9, whose key then issued acme/admin.
        let issuing = try await Self.issue(
            "bot9", by: acmeCA, extensions: "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign",
            in: directory)
        guard case .failure(.certificateRefused(let why)) = try principal(issuing.0, issuing.1) else {
            Issue.record("a CA:TRUE agent certificate was accepted"); return
        }
        #expect(why.contains("CA certificate"))
        // CA:TRUE without keyCertSign: OpenSSL's own check says "not a CA", the basic constraint says otherwise.
        let flagged = try await Self.issue(
            "bot11", by: acmeCA, extensions: "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature", in: directory)
        guard case .failure(.certificateRefused) = try principal(flagged.0, flagged.1) else {
            Issue.record("a CA:TRUE agent certificate without keyCertSign was accepted"); return
        }
        let signing = try await Self.issue(
            "bot10", by: acmeCA, extensions: "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyCertSign",
            in: directory)
        guard case .failure(.certificateRefused) = try principal(signing.0, signing.1) else {
            Issue.record("a keyCertSign agent certificate was accepted"); return
        }
        // A leaf such a certificate issued: with CRLs configured the handshake already fails (its issuer has none); without,
        // the chain verifies, and the authenticator refuses it. The verified chain is put together here from real
        // certificates: an agent's leaf, the issuing agent's certificate, the tenant's CA.
        let leaf = try #require(try DevTLS.verifiedCertificate(chainFile: plain.0, keyFile: plain.1))
        let issuer = try #require(try DevTLS.verifiedCertificate(chainFile: issuing.0, keyFile: issuing.1))
        let chained = PeerCertificate(
            leaf: leaf.leaf, verifiedChain: [leaf.leaf, issuer.leaf, leaf.verifiedChain.last!], trustAnchorLabel: "acme")
        guard
            case .failure(.certificateRefused(let chainWhy)) = Result(catching: { () throws(AuthenticationError) in
                try authenticator.certificates.principal(for: chained, now: Date())
            })
        else {
            Issue.record("a leaf issued by an agent's certificate was accepted"); return
        }
        #expect(chainWhy.contains("names an agent"), "\(chainWhy)")
    }
}

import Foundation
import Identity
import StrictJSON
import TestSupport
import Testing

@Suite("Identity configuration section")
struct IdentityConfigurationTests {
    func read(_ tenants: String, identity: String? = nil) throws -> IdentityConfiguration {
        try IdentityConfiguration.read(
            identity: try identity.map { try JSONObjectReader(try JSONParser.parse($0), path: "identity") },
            tenants: try JSONObjectReader(try JSONParser.parse(tenants), path: "tenants"),
            baseDirectory: DevPKI.repositoryRoot)
    }

    func error(_ tenants: String, identity: String? = nil) -> String {
        do {
            _ = try read(tenants, identity: identity).makeAuthenticator()
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    static let acmeKey = #"{"kid":"k1","public_key_file":"certs-dev/jwt/acme-rs256.pub"}"#

    @Test("the shipped development configuration loads, and its tokens verify")
    func devConfiguration() throws {
        let document = try JSONObjectReader(
            try JSONParser.parse(Array(FileManager.default.contents(atPath: DevPKI.repositoryRoot + "/mcpgw.dev.json")!)))
        let configuration = try IdentityConfiguration.read(
            identity: try document.object("identity"), tenants: try #require(try document.object("tenants")),
            baseDirectory: DevPKI.repositoryRoot)
        #expect(configuration.tenants.keys.sorted() == ["acme", "globex"])
        let authenticator = try configuration.makeAuthenticator()
        let token = try DevKeys.rsaMinter("globex").mint(DevKeys.claims(tenant: "globex", issuedAt: Date()))
        #expect(try authenticator.authenticate(certificate: nil, bearerToken: token, now: Date()).tenant == "globex")
    }

    @Test(
        "mistakes name the setting",
        arguments: [
            (#"{"acme":{"jwt":{"issuers":["i"],"kyes":[]}}}"#, "tenants.acme.jwt.kyes: unknown key"),
            (#"{"acme":{"jwt":{"issuers":[],"keys":[\#(acmeKey)]}}}"#, "tenants.acme.jwt.issuers: needs at least one issuer"),
            (#"{"acme":{"jwt":{"issuers":["i"]}}}"#, "tenants.acme.jwt: needs at least one key"),
            (#"{"acme":{"jwt":{"issuers":["i"],"keys":[{"kid":"k","public_key_file":"nope.pub"}]}}}"#, "cannot read key file"),
            (
                #"{"acme":{"jwt":{"issuers":["i"],"keys":[{"kid":"k","alg":"HS256","public_key_file":"certs-dev/jwt/acme-rs256.pub"}]}}}"#,
                "cannot be used for HS256"
            ),
            (
                #"{"acme":{"jwt":{"issuers":["i"],"keys":[{"kid":"k","alg":"none","secret_file":"certs-dev/jwt/acme-hs256.secret"}]}}}"#,
                "tenants.acme.jwt.keys[0].alg: must be one of"
            ),
            (#"{"acme":{"jwt":{"issuers":["i"],"keys":[{"kid":"k"}]}}}"#, "needs exactly one of public_key_file or secret_file"),
            (#"{"acme":{"clientca":[]}}"#, "tenants.acme.clientca: unknown key"),
            (#"{"ac/me":{}}"#, "tenant id must be"),
            (
                #"{"a":{"jwt":{"issuers":["i"],"keys":[\#(acmeKey)]}},"b":{"jwt":{"issuers":["i"],"keys":[{"kid":"k2","public_key_file":"certs-dev/jwt/globex-rs256.pub"}]}}}"#,
                "issuer 'i' is configured for both"
            ),
        ])
    func mistakes(tenants: String, expected: String) {
        let message = error(tenants)
        #expect(message.contains(expected), "\(message)")
    }

    @Test(
        "an introspection endpoint at a server another tenant takes JWTs from must name the tenant (found by review)",
        arguments: [
            ("https://as.test", true), ("https://as.test/", true), ("https://as.test/realms/b", false), ("https://other.test", false),
        ])
    func introspectionAtAnotherTenantsIssuer(globexIssuer: String, shared: Bool) throws {
        let introspection =
            #"{"url": "https://as.test/introspect", "client_id": "mcpgw", "client_secret_file": "certs-dev/jwt/acme-hs256.secret"}"#
        let configuration = try read(
            #"{"acme":{"oauth":{"authorization_servers":["https://as.test"],"introspection":\#(introspection)}},"#
                + #""globex":{"jwt":{"issuers":["\#(globexIssuer)"],"keys":[\#(Self.acmeKey)]}}}"#,
            identity: #"{"public_url":"https://gateway.test"}"#)
        #expect(configuration.tenants["acme"]?.introspection?.requiresTenantClaim == shared)
    }

    @Test("identity defaults apply to tenants and can be overridden per tenant")
    func defaults() throws {
        let configuration = try read(
            #"{"acme":{"jwt":{"issuers":["i"],"keys":[\#(Self.acmeKey)],"leeway_seconds":5}},"globex":{"spiffe_trust_domain":"globex.example"}}"#,
            identity: #"{"audience":"gw","leeway_seconds":30,"spiffe_trust_domain":"corp.example"}"#)
        #expect(configuration.tenants["acme"]?.jwt?.audience == "gw")
        #expect(configuration.tenants["acme"]?.jwt?.leewaySeconds == 5)
        #expect(configuration.tenants["acme"]?.certificateRules.trustDomain == "corp.example")
        #expect(configuration.tenants["globex"]?.certificateRules.trustDomain == "globex.example")
        #expect(configuration.tenants["globex"]?.jwt == nil)
    }
}

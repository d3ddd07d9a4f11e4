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
            (
                #"{"acme":{"jwt":{"issuers":["i"],"keys":[\#(acmeKey)],"token_types":[]}}}"#,
                "tenants.acme.jwt.token_types: needs at least one type"
            ),
            (
                #"{"acme":{"jwt":{"issuers":["i"],"keys":[\#(acmeKey)],"token_types":["at+jwt","at jwt"]}}}"#,
                "tenants.acme.jwt.token_types[1]: 'at jwt' is not a media type name"
            ),
            (#"{"acme":{"jwt":{"issuers":["i"],"keys":[\#(acmeKey)],"token_types":"at+jwt"}}}"#, "tenants.acme.jwt.token_types"),
            (#"{"ac/me":{}}"#, "tenant id must be"),
            (
                #"{"a":{"jwt":{"issuers":["i"],"keys":[\#(acmeKey)]}},"b":{"jwt":{"issuers":["i"],"keys":[{"kid":"k2","public_key_file":"certs-dev/jwt/globex-rs256.pub"}]}}}"#,
                "issuer 'i' is configured for both"
            ),
            // Found by review: one key under two kids made each tenant's signer a signer of the other's tokens.
            (
                #"{"a":{"jwt":{"issuers":["i"],"keys":[\#(acmeKey)]}},"b":{"jwt":{"issuers":["j"],"keys":[{"kid":"k2","public_key_file":"certs-dev/jwt/acme-rs256.pub"}]}}}"#,
                "tenants 'a' and 'b' are configured with the same JWT key"
            ),
            (
                #"{"a":{"jwt":{"issuers":["i"],"keys":[{"kid":"s1","secret_file":"certs-dev/jwt/acme-hs256.secret"}]}},"b":{"jwt":{"issuers":["j"],"keys":[{"kid":"s2","secret_file":"certs-dev/jwt/acme-hs256.secret"}]}}}"#,
                "tenants 'a' and 'b' are configured with the same JWT key"
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

    @Test("token_types are read as media type names")
    func tokenTypes() throws {
        let configuration = try read(
            #"{"acme":{"jwt":{"issuers":["i"],"keys":[\#(Self.acmeKey)],"token_types":["application/AT+JWT","JWT"]}}}"#)
        #expect(configuration.tenants["acme"]?.jwt?.tokenTypes == [TokenType("at+jwt")!, TokenType("jwt")!])
    }

    @Test("identity defaults apply to tenants and can be overridden per tenant")
    func defaults() throws {
        let configuration = try read(
            #"{"acme":{"jwt":{"issuers":["i"],"keys":[\#(Self.acmeKey)],"leeway_seconds":5}},"globex":{"spiffe_trust_domain":"globex.example"}}"#,
            identity: #"{"audience":"gw","leeway_seconds":30,"spiffe_trust_domain":"corp.example"}"#)
        #expect(configuration.tenants["acme"]?.jwt?.audience == "gw")
        #expect(configuration.tenants["acme"]?.jwt?.leewaySeconds == 5)
        #expect(configuration.tenants["acme"]?.jwt?.tokenTypes == nil)
        #expect(configuration.tenants["acme"]?.certificateRules.trustDomain == "corp.example")
        #expect(configuration.tenants["globex"]?.certificateRules.trustDomain == "globex.example")
        #expect(configuration.tenants["globex"]?.jwt == nil)
    }
}

/// A reload's identity holds what only a restart applies at its running values (found by review: a new `public_url`
/// went into the authenticator while the old resource was still published).
@Suite("Identity settings as a reload applies them")
struct IdentityReloadTests {
    func read(_ tenants: String, identity: String) throws -> IdentityConfiguration {
        try IdentityConfiguration.read(
            identity: try JSONObjectReader(try JSONParser.parse(identity), path: "identity"),
            tenants: try JSONObjectReader(try JSONParser.parse(tenants), path: "tenants"),
            baseDirectory: DevPKI.repositoryRoot)
    }

    static let acme =
        #""acme":{"jwt":{"issuers":["https://i/acme"],"keys":[{"kid":"k1","public_key_file":"certs-dev/jwt/acme-rs256.pub"}]},"oauth":{"authorization_servers":["https://i/acme"]}}"#

    @Test func restartOnlySettingsAreHeld() throws {
        let running = try read("{\(Self.acme)}", identity: #"{"public_url":"https://mcp.example.com"}"#)
        let edited = try read(
            #"{"# + Self.acme.replacingOccurrences(of: "k1", with: "k2")
                + #","initech":{"jwt":{"issuers":["https://i/initech"],"keys":[{"kid":"k3","public_key_file":"certs-dev/jwt/globex-rs256.pub"}]}}}"#,
            identity: #"{"public_url":"https://elsewhere.example.com"}"#)
        let held = edited.holdingRestartOnlySettings(of: running)
        // The audience the published resource names is kept; the tenant added waits for the restart.
        #expect(held.tenants["acme"]?.jwt?.resourceAudiences == ["https://mcp.example.com/tenants/acme/mcp"])
        #expect(held.oauth?.publicURL == "https://mcp.example.com")
        #expect(held.tenants["initech"] == nil)
        // What a reload re-reads is the file's: the rotated key.
        #expect(held.tenants["acme"]?.jwt?.keys.map(\.keyID) == ["k2"])
        // A tenant removed is dropped at once.
        #expect(running.holdingRestartOnlySettings(of: edited).tenants.keys.sorted() == ["acme"])
        let removed = try read("{}", identity: #"{"public_url":"https://mcp.example.com"}"#)
        #expect(removed.holdingRestartOnlySettings(of: running).tenants.isEmpty)
    }
}

import Foundation
import Identity
import StrictJSON
import TestSupport
import Testing

@Suite("JWT verification")
struct JWTVerifierTests {
    let verifier: JWTVerifier
    init() throws { verifier = try DevKeys.verifier() }

    func rejection(_ token: String, now: Date = DevKeys.now) -> AuthenticationError? {
        do {
            _ = try verifier.verify(token, now: now)
            return nil
        } catch {
            return error
        }
    }

    @Test("RS256, HS256 and ES256/EdDSA tokens from our minter verify; tenant, agent and scopes come out")
    func valid() throws {
        for minter in [try DevKeys.rsaMinter(), try DevKeys.hmacMinter()] {
            let token = try minter.mint(DevKeys.claims())
            let verified = try verifier.verify(token, now: DevKeys.now)
            #expect(verified.tenant == "acme")
            #expect(verified.agent == "bot1")
            #expect(verified.scopes == ["tools:read"])
            #expect(verified.facts.issuer == DevKeys.issuer("acme"))
        }
    }

    @Test(
        "each broken token is refused for its own reason",
        arguments: [
            "bad signature", "alg none", "HS256 signed with the RSA public key as secret", "alg mismatch", "unknown kid",
            "expired", "not yet valid", "issued in the future", "wrong issuer", "wrong audience", "missing tenant claim",
            "unknown tenant", "tenant of another key", "two segments", "four segments", "padded base64",
            "header not an object", "duplicate claim", "oversized", "empty signature", "missing exp", "alg NONE",
            "unsupported alg", "crit header", "kid not a string",
        ])
    func refused(_ name: String) throws {
        let rsa = try JWTSigningKey.privateKey(pem: DevKeys.file("acme-rs256.key"))
        let hmac = try JWTSigningKey.hmac(secret: DevKeys.file("acme-hs256.secret"))
        let rsaHeader = #"{"alg":"RS256","kid":"acme-rs256"}"#
        func signed(_ payload: String = DevKeys.payload()) throws -> String {
            try DevKeys.craft(header: rsaHeader, payload: payload, key: rsa)
        }
        let valid = try signed()
        let (token, code): (String, String) = try {
            switch name {
            case "bad signature":
                var parts = valid.split(separator: ".").map(String.init)
                parts[2] = Base64URL.encode(Base64URL.decode(parts[2])!.map { $0 ^ 1 })
                return (parts.joined(separator: "."), "bad_signature")
            case "alg none":
                return (try DevKeys.craft(header: #"{"alg":"none"}"#, payload: DevKeys.payload(), key: nil), "algorithm_none")
            case "alg NONE":
                return (
                    try DevKeys.craft(header: #"{"alg":"NONE","kid":"acme-rs256"}"#, payload: DevKeys.payload(), key: nil), "algorithm_none"
                )
            case "HS256 signed with the RSA public key as secret":
                let confused = try JWTSigningKey.hmac(secret: DevKeys.file("acme-rs256.pub"))
                return (
                    try DevKeys.craft(header: #"{"alg":"HS256","kid":"acme-rs256"}"#, payload: DevKeys.payload(), key: confused),
                    "algorithm_mismatch"
                )
            case "alg mismatch":
                return (
                    try DevKeys.craft(header: #"{"alg":"RS256","kid":"acme-hs256"}"#, payload: DevKeys.payload(), key: rsa),
                    "algorithm_mismatch"
                )
            case "unknown kid":
                return (try DevKeys.craft(header: #"{"alg":"RS256","kid":"nobody"}"#, payload: DevKeys.payload(), key: rsa), "unknown_kid")
            case "expired":
                return (try signed(DevKeys.payload(["exp": "1799999000"])), "token_expired")
            case "not yet valid":
                return (try signed(DevKeys.payload(["nbf": "1800000100"])), "token_not_yet_valid")
            case "issued in the future":
                return (try signed(DevKeys.payload(["iat": "1800000500"])), "token_issued_in_future")
            case "wrong issuer":
                return (try signed(DevKeys.payload(["iss": "\"https://evil.example\""])), "wrong_issuer")
            case "wrong audience":
                return (try signed(DevKeys.payload(["aud": #"["other","mcpgw-prod"]"#])), "wrong_audience")
            case "missing tenant claim":
                return (try signed(DevKeys.payload(["tenant": nil])), "missing_claim")
            case "unknown tenant":
                return (try signed(DevKeys.payload(["tenant": "\"initech\""])), "unknown_tenant")
            case "tenant of another key":
                return (try signed(DevKeys.payload(["tenant": "\"globex\""])), "tenant_mismatch")
            case "two segments":
                return (valid.split(separator: ".").prefix(2).joined(separator: "."), "malformed_token")
            case "four segments":
                return (valid + ".x", "malformed_token")
            case "padded base64":
                return (
                    Base64URL.encode(Array(rsaHeader.utf8)) + "=." + valid.split(separator: ".").dropFirst().joined(separator: "."),
                    "malformed_token"
                )
            case "header not an object":
                return (try DevKeys.craft(header: #"["alg","RS256"]"#, payload: DevKeys.payload(), key: rsa), "malformed_token")
            case "duplicate claim":
                return (try signed(DevKeys.payload().replacingOccurrences(of: "}", with: #","tenant":"globex"}"#)), "malformed_token")
            case "oversized":
                return (try signed(DevKeys.payload(["pad": "\"" + String(repeating: "x", count: 9000) + "\""])), "token_too_large")
            case "empty signature":
                return (String(valid[..<valid.lastIndex(of: ".")!]) + ".", "malformed_token")
            case "missing exp":
                return (try signed(DevKeys.payload(["exp": nil])), "missing_claim")
            case "unsupported alg":
                return (
                    try DevKeys.craft(header: #"{"alg":"HS512","kid":"acme-hs256"}"#, payload: DevKeys.payload(), key: hmac),
                    "unsupported_algorithm"
                )
            case "crit header":
                return (
                    try DevKeys.craft(header: #"{"alg":"RS256","kid":"acme-rs256","crit":["exp"]}"#, payload: DevKeys.payload(), key: rsa),
                    "malformed_token"
                )
            case "kid not a string":
                return (try DevKeys.craft(header: #"{"alg":"RS256","kid":7}"#, payload: DevKeys.payload(), key: rsa), "malformed_token")
            default:
                Issue.record("no case \(name)")
                return ("", "")
            }
        }()
        #expect(try verifier.verify(valid, now: DevKeys.now).tenant == "acme", "the unbroken token must pass")
        let error = try #require(rejection(token), "\(name) was accepted")
        #expect(error.code == code, "\(name): \(error)")
    }

    @Test("a token naming a configured tenant that accepts no tokens is told apart from one naming no tenant at all")
    func tenantWithoutTokens() throws {
        let verifier = try JWTVerifier(tenants: ["acme": DevKeys.settings("acme")], tenantsWithoutTokens: ["initech"])
        let minter = try DevKeys.rsaMinter()
        for (tenant, code) in [("initech", "tenant_mismatch"), ("nobody", "unknown_tenant")] {
            var claims = DevKeys.claims()
            claims.tenant = tenant
            let token = try minter.mint(claims)
            #expect {
                try verifier.verify(token, now: DevKeys.now)
            } throws: { error in
                (error as? AuthenticationError)?.code == code && (code != "tenant_mismatch" || "\(error)".contains("accepts no tokens"))
            }
        }
    }

    @Test("without a kid, a token is refused when its issuer has several keys, and verifies when it has one")
    func keySelectionWithoutKid() throws {
        let rsa = try JWTSigningKey.privateKey(pem: DevKeys.file("acme-rs256.key"))
        let token = try DevKeys.craft(header: #"{"alg":"RS256"}"#, payload: DevKeys.payload(), key: rsa)
        #expect(rejection(token)?.code == "key_not_selectable")
        let single = try JWTVerifier(tenants: [
            "acme": TenantJWTSettings(
                issuers: [DevKeys.issuer("acme")], keys: [try .publicKey(pem: DevKeys.file("acme-rs256.pub"), keyID: nil)],
                audience: "mcpgw")
        ])
        #expect(try single.verify(token, now: DevKeys.now).tenant == "acme")
        // The classic confusion: HS256 "signed" with the RSA public key, no kid — the RSA key's algorithm decides.
        let confused = try JWTSigningKey.hmac(secret: DevKeys.file("acme-rs256.pub"))
        let forged = try DevKeys.craft(header: #"{"alg":"HS256"}"#, payload: DevKeys.payload(), key: confused)
        #expect {
            try single.verify(forged, now: DevKeys.now)
        } throws: { ($0 as? AuthenticationError)?.code == "algorithm_mismatch" }
    }

    @Test("a tenant that names token types accepts those (any case, with or without application/) and refuses others")
    func tokenTypes() throws {
        var typed = try DevKeys.settings("acme")
        typed.tokenTypes = [TokenType("at+jwt")!]
        let strict = try JWTVerifier(tenants: ["acme": typed, "globex": DevKeys.settings("globex")])
        let rsa = try JWTSigningKey.privateKey(pem: DevKeys.file("acme-rs256.key"))
        func token(_ typ: String?) throws -> String {
            let header = typ.map { #"{"alg":"RS256","kid":"acme-rs256","typ":"\#($0)"}"# } ?? #"{"alg":"RS256","kid":"acme-rs256"}"#
            return try DevKeys.craft(header: header, payload: DevKeys.payload(), key: rsa)
        }
        for accepted in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"] {
            #expect(try strict.verify(token(accepted), now: DevKeys.now).tenant == "acme", "\(accepted)")
        }
        for refused in ["JWT", "jwt", "id_token", "at+jwt ", "application/jwt", "text/at+jwt", "logout+jwt", nil] {
            #expect {
                try strict.verify(token(refused), now: DevKeys.now)
            } throws: { ($0 as? AuthenticationError)?.code == "wrong_token_type" }
        }
        // The minter's typ; another tenant without token types, and a verifier without them, accept any typ.
        let minted = try TokenMinter(key: rsa, keyID: "acme-rs256", type: "at+jwt").mint(DevKeys.claims())
        #expect(try strict.verify(minted, now: DevKeys.now).agent == "bot1")
        #expect(try strict.verify(DevKeys.rsaMinter("globex").mint(DevKeys.claims(tenant: "globex")), now: DevKeys.now).tenant == "globex")
        #expect(rejection(try token("id_token")) == nil)
        #expect(rejection(try token(nil)) == nil)
        // A `typ` that is not a string is no type: refused where types are named, ignored elsewhere (as PyJWT does).
        let arrayType = try DevKeys.craft(
            header: #"{"alg":"RS256","kid":"acme-rs256","typ":["at+jwt"]}"#, payload: DevKeys.payload(), key: rsa)
        #expect {
            try strict.verify(arrayType, now: DevKeys.now)
        } throws: { ($0 as? AuthenticationError)?.code == "wrong_token_type" }
        #expect(rejection(arrayType) == nil)
        #expect(TokenType("") == nil && TokenType("at jwt") == nil && TokenType("application/") == nil && TokenType("a/b/c") == nil)
    }

    @Test("leeway: 60 s either side are tolerated, 61 s are not")
    func leeway() throws {
        let token = try DevKeys.rsaMinter().mint(DevKeys.claims(lifetime: 100))
        let expiry = DevKeys.now.addingTimeInterval(100)
        #expect(rejection(token, now: expiry.addingTimeInterval(59)) == nil)
        #expect(rejection(token, now: expiry.addingTimeInterval(61))?.code == "token_expired")
        #expect(rejection(token, now: DevKeys.now.addingTimeInterval(-59)) == nil)
        #expect(rejection(token, now: DevKeys.now.addingTimeInterval(-61))?.code != nil)
    }

    @Test("scopes from space-separated 'scope' and from the 'scp' array")
    func scopes() throws {
        let rsa = try JWTSigningKey.privateKey(pem: DevKeys.file("acme-rs256.key"))
        let token = try DevKeys.craft(
            header: #"{"alg":"RS256","kid":"acme-rs256"}"#,
            payload: DevKeys.payload(["scope": "\"tools:read tools:write\"", "scp": #"["admin"]"#]), key: rsa)
        #expect(try verifier.verify(token, now: DevKeys.now).scopes == ["tools:read", "tools:write", "admin"])
        // At most 256 distinct scopes: verified tokens are cached by the ten thousand (found by review: 2,000 scopes in
        // an 8 KiB token made a 65 KiB set per cached token).
        let many = (0..<257).map { "s\($0)" }
        let crowded = try DevKeys.craft(
            header: #"{"alg":"RS256","kid":"acme-rs256"}"#,
            payload: DevKeys.payload(["scope": "\"\(many.joined(separator: " "))\""]), key: rsa)
        #expect(rejection(crowded)?.code == "invalid_claim")
        let enough = try DevKeys.craft(
            header: #"{"alg":"RS256","kid":"acme-rs256"}"#,
            payload: DevKeys.payload(["scope": "\"\(many.dropLast().joined(separator: " ")) s0 s1\""]), key: rsa)
        #expect(try verifier.verify(enough, now: DevKeys.now).scopes.count == 256)
    }

    @Test("agent ids that could smuggle paths or log lines are refused")
    func agentIDs() throws {
        let rsa = try JWTSigningKey.privateKey(pem: DevKeys.file("acme-rs256.key"))
        for bad in [#""../admin""#, #""bot\n1""#, #""""#, #""a b""#] {
            let token = try DevKeys.craft(header: #"{"alg":"RS256","kid":"acme-rs256"}"#, payload: DevKeys.payload(["sub": bad]), key: rsa)
            #expect(rejection(token)?.code == "invalid_claim", "\(bad)")
        }
    }

    @Test("the cache returns the same answer, and never past the token's expiry")
    func cache() throws {
        let token = try DevKeys.rsaMinter().mint(DevKeys.claims(lifetime: 100))
        let first = try verifier.verify(token, now: DevKeys.now)
        #expect(verifier.cachedTokenCount == 1)
        #expect(try verifier.verify(token, now: DevKeys.now.addingTimeInterval(10)) == first)
        #expect(rejection(token, now: DevKeys.now.addingTimeInterval(161))?.code == "token_expired")
        #expect(verifier.cachedTokenCount == 0)
    }

    @Test("the cache stays within its capacity")
    func cacheBound() throws {
        let small = try DevKeys.verifier(cacheCapacity: 16)
        let minter = try DevKeys.hmacMinter()
        for index in 0..<100 {
            _ = try small.verify(try minter.mint(DevKeys.claims(agent: "bot\(index)")), now: DevKeys.now)
            #expect(small.cachedTokenCount <= 16)
        }
    }

    @Test("a full cache makes room for an eighth at a time, also when only one of its tokens has expired")
    func cacheRoom() throws {
        let small = try DevKeys.verifier(cacheCapacity: 16)
        let minter = try DevKeys.hmacMinter()
        for index in 0..<16 {
            _ = try small.verify(try minter.mint(DevKeys.claims(agent: "bot\(index)", lifetime: Int64(100 + 10 * index))), now: DevKeys.now)
        }
        #expect(small.cachedTokenCount == 16)
        // One token expired: dropping it alone left the cache full again, and the next insert scanned all of it again,
        // on every insert while tokens expired one by one (found by review).
        let later = DevKeys.now.addingTimeInterval(165)
        _ = try small.verify(try minter.mint(DevKeys.claims(agent: "late")), now: later)
        #expect(small.cachedTokenCount == 15)
    }

    @Test("a tenant minting tokens without end evicts its own cached tokens, never another tenant's smaller set")
    func cacheFairAcrossTenants() throws {
        let small = try DevKeys.verifier(cacheCapacity: 16)
        let globex = try (0..<4).map { try DevKeys.hmacMinter("globex").mint(DevKeys.claims(tenant: "globex", agent: "bot\($0)")) }
        for token in globex { _ = try small.verify(token, now: DevKeys.now) }
        // Found by review: an eighth of the cache went on each eviction, whichever tenant's entries they were.
        let acme = try DevKeys.hmacMinter()
        for index in 0..<200 {
            _ = try small.verify(try acme.mint(DevKeys.claims(agent: "flood\(index)")), now: DevKeys.now)
            #expect(small.cachedTokenCount <= 16)
        }
        for token in globex {
            #expect(try small.verify(token, now: DevKeys.now, cachedOnly: true) != nil, "a globex token was evicted by acme's")
        }
        // acme alone may still use the whole cache.
        #expect(small.cachedTokenCount >= 15)
    }

    @Test("configuration errors: a kid or issuer shared by two tenants, weak keys")
    func configuration() throws {
        var globex = try DevKeys.settings("globex")
        globex.issuers = [DevKeys.issuer("acme")]
        #expect(throws: IdentityConfigurationError.self) { try JWTVerifier(tenants: ["acme": DevKeys.settings("acme"), "globex": globex]) }
        globex = try DevKeys.settings("globex")
        globex.keys = [try .publicKey(pem: DevKeys.file("globex-rs256.pub"), keyID: "acme-rs256")]
        #expect(throws: IdentityConfigurationError.self) { try JWTVerifier(tenants: ["acme": DevKeys.settings("acme"), "globex": globex]) }
        #expect(throws: JWTKeyError.self) { try JWTVerificationKey.hmac(secret: Array("short".utf8), keyID: nil) }
        #expect(throws: JWTKeyError.self) {
            try JWTVerificationKey.publicKey(pem: DevKeys.file("acme-rs256.pub"), keyID: nil, algorithm: .es256)
        }
    }

    @Test("ES256 and EdDSA keys sign and verify (keys generated by the openssl CLI)")
    func ellipticCurves() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-keys-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for (name, arguments) in [("es", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]), ("ed", ["-algorithm", "ED25519"])] {
            _ = try await ExternalProcess.run(["openssl", "genpkey"] + arguments + ["-out", "\(directory)/\(name).key"])
            _ = try await ExternalProcess.run([
                "openssl", "pkey", "-in", "\(directory)/\(name).key", "-pubout", "-out", "\(directory)/\(name).pub",
            ])
            let signing = try JWTSigningKey.privateKey(pem: Array(FileManager.default.contents(atPath: "\(directory)/\(name).key")!))
            let key = try JWTVerificationKey.publicKey(
                pem: Array(FileManager.default.contents(atPath: "\(directory)/\(name).pub")!), keyID: name)
            let verifier = try JWTVerifier(tenants: [
                "acme": TenantJWTSettings(issuers: [DevKeys.issuer("acme")], keys: [key], audience: "mcpgw")
            ])
            let token = try TokenMinter(key: signing, keyID: name).mint(DevKeys.claims())
            #expect(try verifier.verify(token, now: DevKeys.now).agent == "bot1", "\(name)")
        }
    }
}

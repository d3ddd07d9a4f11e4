public import ArgumentParser
import Foundation
public import Identity
import StrictJSON

/// `mcpgw issue-token`: mints a development JWT that the development configuration accepts, or decodes one.
struct IssueTokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue-token",
        abstract: "Print a signed JWT for an agent (development credentials), or decode one with --decode.",
        discussion: """
            Defaults use the development keys in certs-dev/jwt (run from the repository root): RS256 with \
            certs-dev/jwt/<tenant>-rs256.key and kid <tenant>-rs256, or HS256 with certs-dev/jwt/<tenant>-hs256.secret \
            and kid <tenant>-hs256; issuer https://issuer.mcpgw.dev/<tenant>; audience mcpgw.
            """
    )

    @Option(help: "Tenant the token is for.")
    var tenant: String?

    @Option(help: "Agent id (the token's sub).")
    var agent: String?

    @Option(help: "Lifetime: seconds, or a number with s, m, h or d (default 1h, at most 30d).")
    var ttl: String = "1h"

    @Option(help: "Space-separated scopes, e.g. \"tools:read tools:write\".")
    var scope: String = ""

    @Option(help: "RS256, HS256, ES256 or EdDSA (default RS256; ES256/EdDSA need --key).")
    var alg: JWTAlgorithm = .rs256

    @Option(help: "PEM private key to sign with (RS256, ES256, EdDSA).")
    var key: String?

    @Option(help: "File whose bytes (minus trailing newlines) are the HS256 secret.")
    var secretFile: String?

    @Option(help: "kid to put in the header (default: the development key's kid when a default key is used).")
    var kid: String?

    @Option(help: "iss claim (default https://issuer.mcpgw.dev/<tenant>).")
    var issuer: String?

    @Option(help: "aud claim.")
    var audience: String = "mcpgw"

    @Option(help: "Name of the claim that carries the tenant.")
    var tenantClaim: String = "tenant"

    @Option(help: "The header's typ: JWT, or at+jwt for a tenant whose jwt.token_types asks for typed access tokens.")
    var typ: String = "JWT"

    @Option(help: "Print the header and claims of TOKEN (not verified) instead of minting.")
    var decode: String?

    func validate() throws {
        if decode != nil { return }
        for (option, value) in [("--tenant", tenant), ("--agent", agent)] {
            guard let value else { throw ValidationError("\(option) is required (letters, digits, . _ - : @)") }
            guard IdentifierRules.isValid(value) else {
                throw ValidationError("\(option) '\(value.prefix(64))' is not a valid id: 1–128 letters, digits, . _ - : @")
            }
        }
        // The minted token carries these itself: a second member of one name is read differently by different
        // parsers (found by review: `--tenant-claim sub` minted `"sub"` twice).
        let ownClaims = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope"]
        guard !tenantClaim.isEmpty, !ownClaims.contains(tenantClaim) else {
            throw ValidationError(
                "--tenant-claim '\(tenantClaim)' cannot be used: the token carries \(ownClaims.joined(separator: ", ")) itself; name another claim"
            )
        }
        if key != nil && secretFile != nil { throw ValidationError("give --key or --secret-file, not both") }
        if secretFile != nil && alg != .hs256 { throw ValidationError("--secret-file signs HS256; use --alg HS256") }
        if key != nil && alg == .hs256 { throw ValidationError("HS256 signs with --secret-file, not --key") }
        if (alg == .es256 || alg == .edDSA) && key == nil {
            throw ValidationError("\(alg.rawValue) needs --key (no development key ships for it)")
        }
        _ = try Self.seconds(ttl)
        guard TokenType(typ) != nil else { throw ValidationError("--typ '\(typ.prefix(64))' is not a media type name (e.g. JWT, at+jwt)") }
    }

    func run() throws {
        if let decode {
            print(try Self.decoded(decode))
            return
        }
        let tenant = tenant!, agent = agent!
        let signingKey: JWTSigningKey
        var keyID = kid
        switch alg {
        case .hs256:
            let path = secretFile ?? "certs-dev/jwt/\(tenant)-hs256.secret"
            var secret = try Self.read(path)
            while secret.last == UInt8(ascii: "\n") || secret.last == UInt8(ascii: "\r") { secret.removeLast() }
            signingKey = try JWTSigningKey.hmac(secret: secret)
            if secretFile == nil && keyID == nil { keyID = "\(tenant)-hs256" }
        default:
            let path = key ?? "certs-dev/jwt/\(tenant)-rs256.key"
            signingKey = try JWTSigningKey.privateKey(pem: try Self.read(path), algorithm: alg)
            if key == nil && keyID == nil { keyID = "\(tenant)-rs256" }
        }
        let claims = TokenMinter.Claims(
            issuer: issuer ?? "https://issuer.mcpgw.dev/\(tenant)", audience: audience, tenant: tenant, agent: agent,
            scopes: scope.split(separator: " ").map(String.init), issuedAt: Date(), lifetimeSeconds: try Self.seconds(ttl),
            tenantClaim: tenantClaim)
        print(try TokenMinter(key: signingKey, keyID: keyID, type: typ).mint(claims))
    }

    /// `90`, `90s`, `15m`, `1h`, `2d` → seconds (1 s … 30 d).
    static func seconds(_ text: String) throws -> Int64 {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var digits = Substring(text)
        var unit: Int64 = 1
        if let last = text.last, let factor = units[last] {
            digits = text.dropLast()
            unit = factor
        }
        guard let value = Int64(digits), value > 0, value <= 30 * 86400 / unit else {
            throw ValidationError("--ttl '\(text)' must be 1s to 30d (e.g. 90s, 15m, 1h, 2d)")
        }
        return value * unit
    }

    static func read(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path) (run from the repository root, or pass the file)")
        }
        return Array(data)
    }

    /// `{"verified": false, "header": …, "claims": …}` with exp/iat/nbf also shown as ISO 8601.
    static func decoded(_ token: String) throws -> String {
        let jws: CompactJWS
        do {
            jws = try CompactJWS(parsing: token.trimmingCharacters(in: .whitespacesAndNewlines), maximumBytes: 64 * 1024)
        } catch {
            throw ValidationError("cannot decode: \(error)")
        }
        var times: [JSONObject.Member] = []
        for name in ["iat", "nbf", "exp"] {
            if let seconds = jws.payload[name]?.numberValue?.doubleValue {
                let date = Date(timeIntervalSince1970: seconds)
                times.append(.init(key: name, value: .string(date.formatted(.iso8601))))
            }
        }
        return JSONValue.object(
            JSONObject([
                .init(key: "verified", value: .bool(false)),
                .init(key: "header", value: .object(jws.header)),
                .init(key: "claims", value: .object(jws.payload)),
                .init(key: "times", value: .object(JSONObject(times))),
            ])
        ).serialized
    }
}

extension JWTAlgorithm: ExpressibleByArgument {}

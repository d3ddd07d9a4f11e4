/// Why a caller was not authenticated. Every case has a stable `code` for audit records and a sentence for people.
public enum AuthenticationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Neither a client certificate nor a bearer token was presented.
    case noCredentials
    /// The token exceeds the size limit.
    case tokenTooLarge(bytes: Int, limit: Int)
    /// The token is not three strict base64url segments with JSON object header and payload.
    case malformedToken(String)
    /// The header asks for `none`.
    case algorithmNone
    /// The header names an algorithm mcpgw does not implement.
    case unsupportedAlgorithm(String)
    /// The header's `alg` differs from the algorithm the selected key is registered for.
    case algorithmMismatch(header: String, key: JWTAlgorithm)
    /// No configured key has this `kid`.
    case unknownKeyID(String)
    /// The token names no `kid` and its issuer's key cannot be chosen unambiguously.
    case keyNotSelectable(String)
    /// The signature does not verify.
    case badSignature
    /// `exp` has passed (beyond the leeway).
    case expired(exp: Int64, now: Int64)
    /// `nbf` is in the future (beyond the leeway).
    case notYetValid(nbf: Int64, now: Int64)
    /// `iat` is in the future (beyond the leeway).
    case issuedInFuture(iat: Int64, now: Int64)
    /// A required claim is absent.
    case missingClaim(String)
    /// A claim has the wrong type or an unusable value.
    case invalidClaim(String, reason: String)
    /// `iss` is not one of the tenant's issuers.
    case wrongIssuer(String)
    /// `aud` does not contain the gateway's audience.
    case wrongAudience(expected: String)
    /// The header's `typ` (nil: none) is not one the tenant accepts.
    case wrongTokenType(String?, accepted: [TokenType])
    /// The token names a tenant that is not configured.
    case unknownTenant(String)
    /// Two sources name different tenants (token vs. signing key, or certificate vs. token).
    case tenantMismatch(String)
    /// The certificate and the token name different agents.
    case agentMismatch(certificate: String, token: String)
    /// The client certificate cannot be mapped to an agent of the tenant whose CA verified it.
    case certificateRefused(String)
    /// An opaque token its authorization server says is not active (or that no tenant's introspection covers).
    case inactiveToken(String)

    /// A stable, machine-readable name of the failure.
    public var code: String {
        switch self {
        case .noCredentials: "no_credentials"
        case .tokenTooLarge: "token_too_large"
        case .malformedToken: "malformed_token"
        case .algorithmNone: "algorithm_none"
        case .unsupportedAlgorithm: "unsupported_algorithm"
        case .algorithmMismatch: "algorithm_mismatch"
        case .unknownKeyID: "unknown_kid"
        case .keyNotSelectable: "key_not_selectable"
        case .badSignature: "bad_signature"
        case .expired: "token_expired"
        case .notYetValid: "token_not_yet_valid"
        case .issuedInFuture: "token_issued_in_future"
        case .missingClaim: "missing_claim"
        case .invalidClaim: "invalid_claim"
        case .wrongIssuer: "wrong_issuer"
        case .wrongAudience: "wrong_audience"
        case .wrongTokenType: "wrong_token_type"
        case .unknownTenant: "unknown_tenant"
        case .tenantMismatch: "tenant_mismatch"
        case .agentMismatch: "agent_mismatch"
        case .certificateRefused: "certificate_refused"
        case .inactiveToken: "token_inactive"
        }
    }

    /// What an unauthenticated caller is told: the kind of failure in general terms, never configuration (which
    /// `kid`s, issuers, algorithms or audiences exist). The audit record keeps `description`.
    public var publicReason: String {
        switch self {
        case .noCredentials: "no credentials: present a client certificate or a bearer token"
        case .expired, .notYetValid, .issuedInFuture: "the token is expired or not yet valid"
        case .badSignature, .algorithmNone, .unsupportedAlgorithm, .algorithmMismatch: "the token's signature does not verify"
        case .unknownKeyID, .keyNotSelectable: "the token is signed by an unknown key"
        case .wrongAudience: "the token was not issued for this resource (audience)"
        case .wrongTokenType: "the token is not of a type this resource accepts (typ)"
        case .wrongIssuer, .unknownTenant: "the token's issuer is not trusted"
        case .tokenTooLarge, .malformedToken, .missingClaim, .invalidClaim: "the token is malformed or lacks a required claim"
        case .tenantMismatch, .agentMismatch: "the presented credentials name different callers"
        case .certificateRefused: "the client certificate is not accepted"
        case .inactiveToken: "the token is not active"
        }
    }

    /// A stable name of the failure's kind, as unauthenticated callers see it (see `publicReason`).
    public var publicCode: String {
        switch self {
        case .noCredentials: "no_credentials"
        case .expired, .notYetValid, .issuedInFuture: "token_expired"
        case .badSignature, .algorithmNone, .unsupportedAlgorithm, .algorithmMismatch: "bad_signature"
        case .unknownKeyID, .keyNotSelectable: "unknown_key"
        case .wrongAudience: "wrong_audience"
        case .wrongTokenType: "wrong_token_type"
        case .wrongIssuer, .unknownTenant: "untrusted_issuer"
        case .tokenTooLarge, .malformedToken, .missingClaim, .invalidClaim: "malformed_token"
        case .tenantMismatch, .agentMismatch: "credentials_disagree"
        case .certificateRefused: "certificate_refused"
        case .inactiveToken: "token_inactive"
        }
    }

    public var description: String {
        switch self {
        case .noCredentials: "no client certificate and no bearer token"
        case .tokenTooLarge(let bytes, let limit): "token of \(bytes) bytes exceeds the limit of \(limit)"
        case .malformedToken(let why): "malformed token: \(why)"
        case .algorithmNone: "unsigned tokens (alg none) are never accepted"
        case .unsupportedAlgorithm(let alg): "unsupported algorithm '\(alg)'"
        case .algorithmMismatch(let header, let key): "token says alg '\(header)' but its key is registered for \(key.rawValue)"
        case .unknownKeyID(let kid): "no key with kid '\(kid)'"
        case .keyNotSelectable(let why): "cannot choose a key: \(why)"
        case .badSignature: "signature does not verify"
        case .expired(let exp, let now): "token expired at \(exp) (now \(now))"
        case .notYetValid(let nbf, let now): "token not valid before \(nbf) (now \(now))"
        case .issuedInFuture(let iat, let now): "token issued in the future at \(iat) (now \(now))"
        case .missingClaim(let name): "required claim '\(name)' is missing"
        case .invalidClaim(let name, let reason): "claim '\(name)' \(reason)"
        case .wrongIssuer(let issuer): "issuer '\(issuer)' is not trusted for this tenant"
        case .wrongAudience(let expected): "audience does not include '\(expected)'"
        case .wrongTokenType(let type, let accepted):
            "token type \(type.map { "'\($0)'" } ?? "missing (no typ)") is not accepted: the tenant accepts \(accepted.map(\.name).joined(separator: ", "))"
        case .unknownTenant(let tenant): "unknown tenant '\(tenant)'"
        case .tenantMismatch(let why): "tenant mismatch: \(why)"
        case .agentMismatch(let certificate, let token): "certificate names agent '\(certificate)' but the token names '\(token)'"
        case .certificateRefused(let why): "client certificate refused: \(why)"
        case .inactiveToken(let why): "opaque token refused: \(why)"
        }
    }
}

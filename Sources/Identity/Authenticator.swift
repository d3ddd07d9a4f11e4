public import TLS

public import struct Foundation.Date

/// Turns the credentials of a request — a verified client certificate, a bearer token, or both — into a principal.
///
/// With both, they must name the same tenant, and the same agent when the token names one; a token-only caller
/// must name its agent.
///
/// A class: every request reads the authenticator in force, and a copy of a struct of both halves retained each of
/// their tables.
public final class Authenticator: Sendable {
    /// Certificate → principal.
    public let certificates: CertificateAuthenticator
    /// Token → verified claims.
    public let tokens: JWTVerifier
    /// The tenants configured when it was built: a tenant a reload removed is not among them, and its callers are
    /// refused however they authenticate (introspection, which is not part of this authenticator, asks this).
    public let tenants: Set<String>

    /// An authenticator from its two halves, for `tenants`.
    public init(certificates: CertificateAuthenticator, tokens: JWTVerifier, tenants: Set<String>) {
        self.certificates = certificates
        self.tokens = tokens
        self.tenants = tenants
    }

    /// The principal for these credentials at time `now`.
    public func authenticate(certificate: PeerCertificate?, bearerToken: String?, now: Date) throws(AuthenticationError) -> Principal {
        try authenticate(certificate: certificate, bearerToken: bearerToken, now: now, cachedTokensOnly: false)!
    }

    /// The principal for these credentials at time `now`; with `cachedTokensOnly`, nil when that would need a
    /// token signature check (a caller on an event loop then does it elsewhere).
    public func authenticate(
        certificate: PeerCertificate?, bearerToken: String?, now: Date, cachedTokensOnly: Bool
    ) throws(AuthenticationError) -> Principal? {
        func verify(_ token: String) throws(AuthenticationError) -> VerifiedToken? {
            try tokens.verify(token, now: now, cachedOnly: cachedTokensOnly)
        }
        switch (certificate, bearerToken) {
        case (nil, nil):
            throw .noCredentials
        case (let certificate?, nil):
            return try certificates.principal(for: certificate, now: now)
        case (nil, let token?):
            guard let verified = try verify(token) else { return nil }
            guard let agent = verified.agent else { throw .missingClaim("agent (token has no agent claim)") }
            var principal = Principal(
                tenant: verified.tenant, agent: agent, method: .jwt, scopes: verified.scopes,
                expiresAt: verified.facts.expiresAt, certificate: nil, token: verified.facts)
            principal.acceptedUntil = verified.acceptedUntil
            return principal
        case (let certificate?, let token?):
            let fromCertificate = try certificates.principal(for: certificate, now: now)
            guard let verified = try verify(token) else { return nil }
            var principal = try Self.agreeing(
                fromCertificate, tokenTenant: verified.tenant, tokenAgent: verified.agent, scopes: verified.scopes,
                tokenExpiry: verified.facts.expiresAt, facts: verified.facts)
            principal.acceptedUntil = [fromCertificate.expiresAt, verified.acceptedUntil].compactMap { $0 }.min()
            return principal
        }
    }

    /// The principal of a client certificate and a token presented together (a JWT, or an opaque token its
    /// authorization server vouched for): they must name the same tenant, and the same agent when the token names one.
    public static func agreeing(
        _ fromCertificate: Principal, tokenTenant: String, tokenAgent: String?, scopes: Set<String>, tokenExpiry: Date?,
        facts: Principal.TokenFacts?
    ) throws(AuthenticationError) -> Principal {
        guard tokenTenant == fromCertificate.tenant else {
            throw .tenantMismatch("client certificate belongs to tenant '\(fromCertificate.tenant)', token to tenant '\(tokenTenant)'")
        }
        if let agent = tokenAgent, agent != fromCertificate.agent {
            throw .agentMismatch(certificate: fromCertificate.agent, token: agent)
        }
        return Principal(
            tenant: fromCertificate.tenant, agent: fromCertificate.agent, method: .both, scopes: scopes,
            expiresAt: [fromCertificate.expiresAt, tokenExpiry].compactMap { $0 }.min(), certificate: fromCertificate.certificate,
            token: facts)
    }
}

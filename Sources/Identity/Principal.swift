public import struct Foundation.Date

/// An authenticated caller: an agent of one tenant, and how we know.
public struct Principal: Sendable, Hashable {
    /// The most scopes a token may carry (more are refused, `401`). Verified principals are cached by the ten thousand:
    /// an introspection answer of 32,000 scopes (repeats included) made a 1 MiB set per cached token, 10 GiB per
    /// tenant's cache (found by review).
    public static let maximumScopes = 256

    /// How the caller proved who it is.
    public enum AuthenticationMethod: String, Sendable, Hashable {
        /// A verified client certificate.
        case mtls
        /// A verified bearer JWT.
        case jwt
        /// Both, agreeing on tenant (and agent).
        case both
        /// An opaque bearer token its authorization server vouched for (RFC 7662 introspection).
        case introspection
    }

    /// Facts from the client certificate, for audit records.
    public struct CertificateFacts: Sendable, Hashable {
        /// Subject DN.
        public let subject: String
        /// Issuer DN.
        public let issuer: String
        /// Serial number (hex).
        public let serialNumber: String
        /// SHA-256 fingerprint (hex).
        public let sha256Fingerprint: String
        /// The SAN URI the agent came from (nil when taken from the CN).
        public let spiffeID: String?
        /// End of validity.
        public let notAfter: Date
    }

    /// Facts from the bearer token, for audit records.
    public struct TokenFacts: Sendable, Hashable {
        /// `iss`.
        public let issuer: String
        /// `sub`.
        public let subject: String?
        /// The `kid` of the key that verified it.
        public let keyID: String?
        /// The algorithm that verified it.
        public let algorithm: JWTAlgorithm
        /// `jti`, if any.
        public let tokenID: String?
        /// `iat`, if any.
        public let issuedAt: Date?
        /// `exp`, if any.
        public let expiresAt: Date?
    }

    /// The tenant this principal belongs to.
    public let tenant: String
    /// The agent id within the tenant.
    public let agent: String
    /// How the principal was authenticated.
    public let method: AuthenticationMethod
    /// Scopes granted by the token (empty for certificate-only callers).
    public var scopes: Set<String> { details.scopes }
    /// When the credential stops being valid (the earlier of token `exp` and certificate `notAfter`).
    public let expiresAt: Date?
    /// The last instant these credentials are accepted: `expiresAt`, or for a JWT its `exp` plus the configured
    /// leeway (a request made then would still be served). Something that lasts beyond one request, such as a
    /// stream, ends here.
    public var acceptedUntil: Date?
    /// Certificate facts, when a certificate was presented.
    public var certificate: CertificateFacts? { details.certificate }
    /// Token facts, when a token was presented.
    public var token: TokenFacts? { details.token }
    /// The scopes and the facts, kept behind one reference: a principal is copied several times for every request,
    /// and a copy then retains three references instead of a dozen strings.
    private let details: Details

    /// The parts of a principal that only some steps read (`scopes`, `certificate`, `token`).
    private final class Details: Sendable, Hashable {
        let scopes: Set<String>
        let certificate: CertificateFacts?
        let token: TokenFacts?

        init(scopes: Set<String>, certificate: CertificateFacts?, token: TokenFacts?) {
            self.scopes = scopes
            self.certificate = certificate
            self.token = token
        }

        static func == (lhs: Details, rhs: Details) -> Bool {
            lhs === rhs || (lhs.scopes == rhs.scopes && lhs.certificate == rhs.certificate && lhs.token == rhs.token)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(scopes)
            hasher.combine(certificate)
            hasher.combine(token)
        }
    }

    /// A principal from its parts.
    public init(
        tenant: String, agent: String, method: AuthenticationMethod, scopes: Set<String>, expiresAt: Date?,
        certificate: CertificateFacts?, token: TokenFacts?
    ) {
        self.tenant = tenant
        self.agent = agent
        self.method = method
        self.expiresAt = expiresAt
        self.acceptedUntil = expiresAt
        self.details = Details(scopes: scopes, certificate: certificate, token: token)
    }
}

/// Which tenant and agent ids mcpgw accepts: 1–128 characters of letters, digits, `.`, `_`, `-`, `:` and `@`
/// (no `/`, whitespace or control characters, so an id can never smuggle a path, a pattern or a log line).
public enum IdentifierRules {
    /// Whether `text` is an acceptable agent or tenant id.
    public static func isValid(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 128 else { return false }
        return text.unicodeScalars.allSatisfy { scalar in
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
                || ".-_:@".unicodeScalars.contains(scalar)
        }
    }
}

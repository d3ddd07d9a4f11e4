/// The answer for one call, with everything needed to explain it.
public struct PolicyDecision: Sendable, Hashable {
    /// The outcome.
    public enum Outcome: Sendable, Hashable {
        /// Allowed.
        case allow
        /// Allowed and marked for audit.
        case audit
        /// Refused by a rule or the default.
        case deny
        /// Allowed by policy but over a rate limit; retry after this many seconds.
        case rateLimited(retryAfter: Double)
        /// Allowed by policy, but a shared rate limit could not be consulted (its store is unreachable) and the
        /// tenant fails closed.
        case limitsUnavailable

        /// `allow`, `audit`, `deny` or `rate_limited`.
        public var name: String {
            switch self {
            case .allow: "allow"
            case .audit: "audit"
            case .deny: "deny"
            case .rateLimited: "rate_limited"
            case .limitsUnavailable: "unavailable"
            }
        }

        /// Whether the call may go on.
        public var permits: Bool { self == .allow || self == .audit }
    }

    /// How one matching rule saw the call.
    public struct RuleMatch: Sendable, Hashable {
        /// The rule id.
        public let rule: String
        /// Its document.
        public let document: String
        /// The rule's action as written.
        public let action: PolicyAction
        /// What it did to this call (an allow rule whose constraints are violated denies).
        public let effect: PolicyAction
        /// Why.
        public let reason: String
        /// Argument values that made it decide.
        public let findings: [ArgumentFinding]
        /// Whether the rule asks for full arguments in the audit record.
        public let logArguments: Bool
        /// How long a call this rule lets through may take (`call_timeout_seconds`), if it says.
        public var callTimeoutSeconds: Int? = nil
        /// The scopes an allow or audit rule requires, when it denied only because the token lacks some of them.
        public var requiredScopes: [String] = []
    }

    /// The outcome.
    public let outcome: Outcome
    /// The deciding rule's id, `default` when no rule matched, or the rate limit's id.
    public let rule: String
    /// The document of the deciding rule (or the tenant, for the default).
    public let document: String
    /// A sentence a person can read.
    public let reason: String
    /// Every rule that matched, in evaluation order.
    public let matches: [RuleMatch]
    /// Whether the audit record should carry the full arguments.
    public let logArguments: Bool
    /// How long the call may take to answer, when the deciding allow or audit rule says (`call_timeout_seconds`).
    public var callTimeoutSeconds: Int?
    /// Set when shared rate limits could not be consulted and this decision used the replica's local share instead
    /// (`local_fallback`), or refused for that reason (`fail_closed`): what the audit record says about it.
    public var sharedLimitsNote: SharedLimitsNote?
    /// Every scope the call needs, when it was denied only for want of scopes (a token with them would be
    /// allowed by the rules that denied it): what an `insufficient_scope` challenge lists. Empty otherwise.
    public var insufficientScopes: [String] = []

    /// A decision from its parts (the gateway makes its own for protocol plumbing it forwards undecided).
    public init(outcome: Outcome, rule: String, document: String, reason: String, matches: [RuleMatch], logArguments: Bool) {
        self.outcome = outcome
        self.rule = rule
        self.document = document
        self.reason = reason
        self.matches = matches
        self.logArguments = logArguments
    }
}

/// How a decision was reached while the shared rate-limit store was out of reach.
public enum SharedLimitsNote: String, Sendable, Hashable {
    /// The replica's local share of each shared limit applied.
    case localFallback = "local_fallback"
    /// The call was refused: the tenant fails closed.
    case failClosed = "fail_closed"
}

/// What a rule (or a policy's default) does with a call it matches.
public enum PolicyAction: String, Sendable, Hashable, CaseIterable, Comparable {
    /// Let the call through.
    case allow
    /// Let the call through and mark it for audit.
    case audit
    /// Refuse the call.
    case deny

    /// The verb for sentences: `allows`, `audits`, `denies`.
    public var verb: String {
        switch self {
        case .allow: "allows"
        case .audit: "audits"
        case .deny: "denies"
        }
    }

    /// Restrictiveness order: allow < audit < deny.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }

    private var rank: Int {
        switch self {
        case .allow: 0
        case .audit: 1
        case .deny: 2
        }
    }
}

/// One policy file: a name, a default action, rules and rate limits.
public struct PolicyDocument: Sendable {
    /// The document's name (`name`, or the file name without `.json`).
    public let name: String
    /// Free text for people.
    public let description: String?
    /// What happens to a call no rule matches; deny when the file does not say.
    public let defaultAction: PolicyAction
    /// The rules in file order.
    public let rules: [PolicyRule]
    /// The rate limits in file order.
    public let rateLimits: [RateLimitRule]
    /// The file it was loaded from.
    public let file: String
}

/// Why a policy file or directory cannot be used: which file, which rule, which field, and what is wrong.
public struct PolicyLoadError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file (or directory) at fault.
    public let file: String
    /// The rule or rate-limit id, when the problem is inside one.
    public let rule: String?
    /// The field's path in the document, e.g. `rules[3].args.path.deny[0]`.
    public let field: String?
    /// What is wrong.
    public let reason: String

    /// An error from its parts.
    public init(file: String, rule: String? = nil, field: String? = nil, reason: String) {
        self.file = file
        self.rule = rule
        self.field = field
        self.reason = reason
    }

    public var description: String {
        var text = file
        if let rule { text += ": rule \(rule)" }
        if let field { text += ": \(field)" }
        return text + ": " + reason
    }
}

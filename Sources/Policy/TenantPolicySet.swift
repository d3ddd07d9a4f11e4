import StrictJSON

/// All the policy documents that apply to one tenant (its own and the global ones), indexed for evaluation.
///
/// Deny overrides across every document: any matching deny wins, then any audit, then any allow, else the most
/// restrictive default of all the documents. Rules are indexed by exact tool name and by literal prefix, so a
/// decision looks only at rules that can match the tool. A class: every call looks its tenant's set up, and a
/// reference is one retain where a struct of ten arrays and dictionaries is ten.
public final class TenantPolicySet: Sendable {
    /// The tenant.
    public let tenant: String
    /// The documents, global ones first, then the tenant's in file-name order.
    public let documents: [PolicyDocument]
    /// The most restrictive default of the documents.
    public let defaultAction: PolicyAction
    /// Every rule in evaluation order.
    let rules: [PolicyRule]
    /// Every rate limit.
    public let rateLimits: [RateLimitRule]

    /// The ids of the tenant's rules and rate limits (the rule names its decisions can carry).
    public var ruleIDs: Set<String> { Set(rules.map(\.id)).union(rateLimits.map(\.id)) }

    private let exactTools: [String: [Int]]
    private let prefixTools: [String: [Int]]
    private let prefixLengths: [Int]
    private let anyTool: [Int]
    private let byMethod: [String: [Int]]

    /// Indexes `documents` for `tenant`.
    public init(tenant: String, documents: [PolicyDocument]) {
        self.tenant = tenant
        self.documents = documents
        self.defaultAction = documents.map(\.defaultAction).max() ?? .deny
        let rules = documents.flatMap(\.rules)
        self.rules = rules
        self.rateLimits = documents.flatMap(\.rateLimits)
        var exact: [String: [Int]] = [:], prefix: [String: [Int]] = [:], any: [Int] = [], methods: [String: [Int]] = [:]
        for (index, rule) in rules.enumerated() {
            for method in rule.methods where method != "tools/call" { methods[method, default: []].append(index) }
            guard rule.methods.contains("tools/call") else { continue }
            if rule.tools.isEmpty { any.append(index) }
            for pattern in rule.tools {
                if pattern.isExact {
                    exact[pattern.literalPrefix, default: []].append(index)
                } else if pattern.literalPrefix.isEmpty {
                    any.append(index)
                } else {
                    prefix[pattern.literalPrefix, default: []].append(index)
                }
            }
        }
        self.exactTools = exact.mapValues { Array(Set($0)).sorted() }
        self.prefixTools = prefix.mapValues { Array(Set($0)).sorted() }
        // Lengths in Unicode scalars, as `NamePattern` matches: a combining mark after the prefix would join its last
        // character and hide the prefix from a lookup by characters.
        self.prefixLengths = Set(prefix.keys.map(\.unicodeScalars.count)).sorted()
        self.anyTool = Array(Set(any)).sorted()
        self.byMethod = methods
    }

    /// How many rules the tenant has (its own and global).
    public var ruleCount: Int { rules.count }

    /// The ids of the rules an evaluation of `request` looks at (the index's candidates), for `policy explain`.
    public func candidateRules(for request: PolicyRequest) -> [String] {
        candidates(for: request).map { rules[$0].id }
    }

    /// Indices of rules that may apply to `request`, in evaluation order.
    func candidates(for request: PolicyRequest) -> [Int] {
        guard request.method == "tools/call" else { return byMethod[request.method] ?? [] }
        guard let tool = request.target else { return anyTool }
        // Each list is sorted and free of repeats; most calls find one list, which is then the answer as it is, shared
        // (this runs for every call, so nothing is allocated unless lists must be merged).
        var found = anyTool
        var others: [[Int]] = []
        func take(_ list: [Int]) {
            if found.isEmpty { found = list } else if !list.isEmpty { others.append(list) }
        }
        if let exact = exactTools[tool] { take(exact) }
        if !prefixLengths.isEmpty {
            // Walked once, in scalars: each prefix is a slice of the name up to its length (ascending).
            let scalars = tool.unicodeScalars
            var end = scalars.startIndex
            var taken = 0
            for length in prefixLengths {
                while taken < length && end != scalars.endIndex {
                    end = scalars.index(after: end)
                    taken += 1
                }
                // `*` matches an empty run too: a prefix as long as the name applies to it (`exec*` covers `exec`).
                guard taken == length else { break }
                if let rules = prefixTools[String(tool[..<end])] { take(rules) }
            }
        }
        guard !others.isEmpty else { return found }
        for list in others { found += list }
        found.sort()
        var merged: [Int] = []
        merged.reserveCapacity(found.count)
        for index in found where merged.last != index { merged.append(index) }
        return merged
    }

    /// Whether some arguments exist with which `request`'s target could be called: unconditional denies and the
    /// default count, rules with argument conditions are given the benefit of the doubt. Used to filter lists.
    public func mayCall(_ request: PolicyRequest) -> Bool {
        var request = request
        if request.method == "resources/read", let uri = request.target {
            // As a read would see it: a listed URI that cannot be read unambiguously is not shown.
            guard let canonical = ResourceURI.canonical(uri) else { return false }
            request.target = canonical
        }
        var permitted = false
        for index in candidates(for: request) {
            let rule = rules[index]
            guard applies(rule, to: request) else { continue }
            if rule.action == .deny {
                if rule.constraints.isEmpty { return false }
            } else if rule.scopes.allSatisfy(request.scopes.contains) {
                permitted = true
            }
        }
        return permitted || defaultAction != .deny
    }

    /// Which matching rule's effect decides: a deny wins over an audit, which wins over an allow.
    private static let precedence: [PolicyAction] = [.deny, .audit, .allow]

    /// The policy's answer for `request` (rate limits are not consulted here).
    public func evaluate(_ request: PolicyRequest) -> PolicyDecision {
        var request = request
        if request.method == "resources/read", let uri = request.target {
            // Patterns see the URI as a server resolves it: no dot segments, no encodings (see `ResourceURI`).
            guard let canonical = ResourceURI.canonical(uri) else {
                return PolicyDecision(
                    outcome: .deny, rule: "resource_uri", document: tenant,
                    reason: "resource URI cannot be read unambiguously (control characters, invalid encoding or nested too deep)",
                    matches: [], logArguments: false)
            }
            request.target = canonical
        }
        var matches: [PolicyDecision.RuleMatch] = []
        var arguments = LazyArguments(request.arguments)
        // The deciding match: the first of the highest precedence, noted as matches are found (searching the list
        // afterwards would copy each match it looks at).
        var decidingIndex: Int?
        var decidingRank = Self.precedence.count
        for index in candidates(for: request) {
            let rule = rules[index]
            guard applies(rule, to: request) else { continue }
            // Keep going after a match: every matching rule is reported, and a later deny still wins.
            if let match = effect(of: rule, on: request, arguments: &arguments) {
                if let rank = Self.precedence.firstIndex(of: match.effect), rank < decidingRank {
                    (decidingIndex, decidingRank) = (matches.count, rank)
                }
                matches.append(match)
            }
        }
        if let decidingIndex {
            let wanted = Self.precedence[decidingRank]
            let deciding = matches[decidingIndex]
            let outcome: PolicyDecision.Outcome = wanted == .deny ? .deny : wanted == .audit ? .audit : .allow
            // Full arguments are logged only when the deciding rule asks: a call denied by one rule never has its
            // arguments (a secret, say) logged because another matching rule wanted them.
            var decision = PolicyDecision(
                outcome: outcome, rule: deciding.rule, document: deciding.document, reason: deciding.reason,
                matches: matches, logArguments: deciding.logArguments)
            if wanted != .deny { decision.callTimeoutSeconds = deciding.callTimeoutSeconds }
            if wanted == .deny, case let denials = matches.filter({ $0.effect == .deny }),
                denials.allSatisfy({ !$0.requiredScopes.isEmpty })
            {
                // Denied only for want of scopes: a token with these would pass the rules that denied it.
                var needed: [String] = []
                for scope in denials.flatMap(\.requiredScopes) where !needed.contains(scope) { needed.append(scope) }
                decision.insufficientScopes = needed
            }
            return decision
        }
        let outcome: PolicyDecision.Outcome = defaultAction == .deny ? .deny : defaultAction == .audit ? .audit : .allow
        let what = request.target.map { "\(request.method) \($0)" } ?? request.method
        return PolicyDecision(
            outcome: outcome, rule: "default", document: tenant,
            reason: "no rule matches \(what) for agent \(request.agent); the default is \(defaultAction.rawValue)",
            matches: matches, logArguments: false)
    }

    private func applies(_ rule: PolicyRule, to request: PolicyRequest) -> Bool {
        guard rule.methods.contains(request.method) else { return false }
        let targets = rule.targets(for: request.method)
        if !targets.isEmpty {
            guard let target = request.target, targets.contains(where: { $0.matches(target) }) else { return false }
        }
        if !rule.agents.isEmpty && !rule.agents.contains(where: { $0.matches(request.agent) }) { return false }
        return true
    }

    /// What a matching rule does to the call; nil for a deny rule whose argument conditions are not met (it does
    /// not apply). An allow/audit rule whose required scopes or argument constraints are not met denies.
    private func effect(
        of rule: PolicyRule, on request: PolicyRequest, arguments: inout LazyArguments
    ) -> PolicyDecision.RuleMatch? {
        func match(_ effect: PolicyAction, _ reason: String, _ findings: [ArgumentFinding] = []) -> PolicyDecision.RuleMatch {
            PolicyDecision.RuleMatch(
                rule: rule.id, document: rule.document, action: rule.action, effect: effect, reason: reason, findings: findings,
                logArguments: rule.logArguments, callTimeoutSeconds: rule.callTimeoutSeconds)
        }
        if rule.action != .deny {
            let missing = rule.scopes.filter { !request.scopes.contains($0) }
            if !missing.isEmpty {
                var denial = match(.deny, "rule \(rule.id) requires scope \(missing.joined(separator: " "))")
                denial.requiredScopes = rule.scopes
                return denial
            }
        }
        guard !rule.constraints.isEmpty else {
            return match(
                rule.action, rule.describedReason ?? rule.reason(for: request.target ?? request.method, constraintsSatisfied: false))
        }
        guard let allLeaves = arguments.leaves else {
            return match(.deny, arguments.refusal?.reason ?? ArgumentCanonicalizer.Refusal.tooManyValues.reason)
        }
        let leaves =
            rule.inspectsNestedJSON || !allLeaves.contains(where: \.isInsideJSONString)
            ? allLeaves : allLeaves.filter { !$0.isInsideJSONString }
        let topLevel = rule.constraintsCheckTopLevel ? arguments.topLevelTypes : [:]
        var steps = arguments.searchSteps
        var findings: [ArgumentFinding] = []
        // Read in place: a `for` loop over the array would copy each constraint (its patterns and lists).
        rule.constraints.withUnsafeBufferPointer { constraints in
            for index in constraints.indices {
                findings += constraints[index].violations(in: leaves, topLevel: topLevel, searchSteps: &steps)
            }
        }
        arguments.searchSteps = steps
        if findings.isEmpty {
            return rule.action == .deny
                ? nil
                : match(rule.action, rule.reason(for: request.target ?? request.method, constraintsSatisfied: true))
        }
        let first = findings[0]
        return match(.deny, "rule \(rule.id): argument \(first.location) \(first.problem)", findings)
    }
}

/// A call's arguments, canonicalised on first use only (most rules have no argument constraints).
struct LazyArguments {
    private let arguments: JSONValue?
    private var computed = false
    private var cachedLeaves: [ArgumentValue]?
    /// Why the leaves were not examined, when they were not.
    private(set) var refusal: ArgumentCanonicalizer.Refusal?
    private var cachedTypes: [String: [String]]?

    init(_ arguments: JSONValue?) { self.arguments = arguments }

    /// All leaves, canonicalised; nil when there are too many to examine.
    var leaves: [ArgumentValue]? {
        mutating get {
            compute()
            return cachedLeaves
        }
    }

    /// Folded top-level key → JSON types of the arguments with that key (several when keys differ only in case).
    var topLevelTypes: [String: [String]] {
        mutating get {
            if let cachedTypes { return cachedTypes }
            var types: [String: [String]] = [:]
            if case .object(let object) = arguments {
                for member in object.members {
                    types[ArgumentCanonicalizer.foldKey(member.key), default: []].append(member.value.typeName)
                }
            }
            cachedTypes = types
            return types
        }
    }

    /// Steps left for the regular-expression searches of this call (`LinearRegex.search`): one budget for every
    /// pattern, leaf and form, so that splitting a value into many leaves cannot multiply the work. A million, and 16
    /// per byte of the leaves' forms; set when the leaves are computed.
    var searchSteps = 0

    private mutating func compute() {
        guard !computed else { return }
        computed = true
        switch ArgumentCanonicalizer.examine(arguments) {
        case .success(let leaves):
            cachedLeaves = leaves
            var bytes = 0
            for leaf in leaves { for form in leaf.forms { bytes += form.utf8.count } }
            searchSteps = LinearRegex.stepBudget(forScalars: bytes)
        case .failure(let refusal): self.refusal = refusal
        }
    }
}

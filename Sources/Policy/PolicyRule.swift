/// One rule of a policy document. A class: evaluation looks rules up on every call, and a reference is one retain
/// where a struct of a dozen arrays and strings is a dozen.
public final class PolicyRule: Sendable {
    /// The rule's id, unique within its document.
    public let id: String
    /// Free text for people.
    public let description: String?
    /// What the rule does when it applies.
    public let action: PolicyAction
    /// MCP methods the rule governs (`tools/call` when the document names only tools).
    public let methods: [String]
    /// Tool-name patterns (for `tools/call`); empty means every tool.
    public let tools: [NamePattern]
    /// Resource-URI patterns (for `resources/read`); empty means every resource.
    public let resources: [NamePattern]
    /// Prompt-name patterns (for `prompts/get`); empty means every prompt.
    public let prompts: [NamePattern]
    /// Agent-id patterns; empty means every agent.
    public let agents: [NamePattern]
    /// Token scopes an allow/audit rule requires (all of them).
    public let scopes: [String]
    /// Argument constraints (`arg_deny` and `args`).
    public let constraints: [ArgumentConstraint]
    /// Whether audit records of calls this rule decides carry the full arguments.
    public let logArguments: Bool
    /// Whether the argument constraints also see what string arguments hold as JSON (`nested_json`, default true).
    public let inspectsNestedJSON: Bool
    /// How long a call this rule lets through may take to answer (`call_timeout_seconds`), overriding the tenant's.
    public let callTimeoutSeconds: Int?
    /// The document the rule comes from.
    public let document: String
    /// The file it was loaded from.
    public let file: String
    /// `rule <id> <verb> `, the start of the reason a match of this rule records (built once, not per call).
    private let reasonPrefix: String
    /// `rule <id>: <description>`, the reason a match without argument constraints records when the rule has a
    /// description.
    let describedReason: String?
    /// Whether a constraint checks the arguments' top level (their keys and types), found once.
    let constraintsCheckTopLevel: Bool

    /// A rule with these parts (see each property).
    public init(
        id: String, description: String?, action: PolicyAction, methods: [String], tools: [NamePattern], resources: [NamePattern],
        prompts: [NamePattern], agents: [NamePattern], scopes: [String], constraints: [ArgumentConstraint], logArguments: Bool,
        inspectsNestedJSON: Bool, callTimeoutSeconds: Int?, document: String, file: String
    ) {
        self.id = id
        self.description = description
        self.action = action
        self.methods = methods
        self.tools = tools
        self.resources = resources
        self.prompts = prompts
        self.agents = agents
        self.scopes = scopes
        self.constraints = constraints
        self.logArguments = logArguments
        self.inspectsNestedJSON = inspectsNestedJSON
        self.callTimeoutSeconds = callTimeoutSeconds
        self.document = document
        self.file = file
        self.reasonPrefix = "rule \(id) \(action.verb) "
        self.describedReason = description.map { "rule \(id): \($0)" }
        self.constraintsCheckTopLevel = constraints.contains(where: \.checksTopLevel)
    }

    /// `rule <id> <verb> <target>`, with `; arguments satisfy its constraints` when `constraintsSatisfied`: the reason
    /// a match records, in one string allocated once (interpolation built it in three, for every call).
    func reason(for target: String, constraintsSatisfied: Bool) -> String {
        let tail = constraintsSatisfied ? "; arguments satisfy its constraints" : ""
        var text = ""
        text.reserveCapacity(reasonPrefix.utf8.count + target.utf8.count + tail.utf8.count)
        text += reasonPrefix
        text += target
        text += tail
        return text
    }

    /// The target patterns that apply to `method` (tools, resources or prompts).
    func targets(for method: String) -> [NamePattern] {
        switch method {
        case "tools/call": tools
        case "resources/read": resources
        case "prompts/get": prompts
        default: []
        }
    }
}

/// A token-bucket rate limit declared in a policy document.
public struct RateLimitRule: Sendable, Hashable {
    /// What a bucket is kept per.
    public enum Scope: String, Sendable, Hashable, CaseIterable {
        /// One bucket for the whole tenant.
        case tenant
        /// One bucket per agent.
        case agent
        /// One bucket per tool.
        case tool
        /// One bucket per agent and tool.
        case agentTool = "agent+tool"
    }

    /// Where a limit's buckets are kept when the gateway has a shared store (Redis) configured.
    public enum Sharing: String, Sendable, Hashable, CaseIterable {
        /// In the shared store: one bucket across every replica.
        case global
        /// In this process: each replica keeps its own bucket.
        case local
    }

    /// The limit's id, unique within its tenant.
    public let id: String
    /// Methods it counts (default `tools/call`).
    public let methods: [String]
    /// Tool patterns it counts; empty means every tool.
    public let tools: [NamePattern]
    /// Agent patterns it counts; empty means every agent.
    public let agents: [NamePattern]
    /// Tokens added per second.
    public let ratePerSecond: Double
    /// Bucket size: the burst allowed after a quiet period.
    public let burst: Double
    /// What a bucket is kept per.
    public let scope: Scope
    /// The document it comes from.
    public let document: String
    /// `scope` as written: global or local; nil means global when a shared store is configured.
    public var sharing: Sharing?

    /// Whether this limit counts a call of `method` on `target` (the tool name for `tools/call`) by `agent`.
    public func counts(method: String, target: String?, agent: String) -> Bool {
        methods.contains(method)
            && (tools.isEmpty || target.map { name in tools.contains { $0.matches(name) } } ?? false)
            && (agents.isEmpty || agents.contains { $0.matches(agent) })
    }

    /// A limit from its parts.
    public init(
        id: String, methods: [String], tools: [NamePattern], agents: [NamePattern], ratePerSecond: Double, burst: Double,
        scope: Scope, document: String, sharing: Sharing? = nil
    ) {
        self.sharing = sharing
        self.id = id
        self.methods = methods
        self.tools = tools
        self.agents = agents
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        self.scope = scope
        self.document = document
    }
}

extension RateLimitRule {
    /// The burst as people write it: a whole number without a fraction (any size, without trapping).
    public var burstText: String {
        burst < 1e15 && burst == burst.rounded(.down) ? String(Int64(burst)) : String(burst)
    }

    /// This limit with its rate and burst divided by `replicas` (each at least its smallest useful value): what one
    /// of that many replicas enforces alone when the shared store is out of reach.
    public func share(of replicas: Int) -> RateLimitRule {
        let parts = Double(max(1, replicas))
        return RateLimitRule(
            id: id, methods: methods, tools: tools, agents: agents, ratePerSecond: ratePerSecond / parts,
            burst: max(1, (burst / parts).rounded(.down)), scope: scope, document: document, sharing: sharing)
    }
}

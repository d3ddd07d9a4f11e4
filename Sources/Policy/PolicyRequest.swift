public import StrictJSON

/// A call to be decided: who (tenant, agent, scopes), what (method and its target), with which arguments.
public struct PolicyRequest: Sendable {
    /// The caller's tenant.
    public var tenant: String
    /// The caller's agent id.
    public var agent: String
    /// The caller's token scopes.
    public var scopes: Set<String>
    /// The MCP method, e.g. `tools/call`.
    public var method: String
    /// The tool name (`tools/call`), resource URI (`resources/read`) or prompt name (`prompts/get`).
    public var target: String?
    /// The arguments (`params.arguments` for tools and prompts, `params` otherwise).
    public var arguments: JSONValue?

    /// A request from its parts.
    public init(
        tenant: String, agent: String, scopes: Set<String> = [], method: String = "tools/call", target: String?, arguments: JSONValue?
    ) {
        self.tenant = tenant
        self.agent = agent
        self.scopes = scopes
        self.method = method
        self.target = target
        self.arguments = arguments
    }
}

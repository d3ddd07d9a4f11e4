public import StrictJSON

/// How the gateway treats an MCP method.
public enum MCPMethod {
    /// Protocol plumbing that reaches no tool, resource or prompt: forwarded without a policy decision (still audited).
    static let plumbing: Set<String> = [
        "initialize", "ping", "tools/list", "resources/list", "resources/templates/list", "prompts/list",
        "logging/setLevel", "resources/subscribe", "resources/unsubscribe", "server/discover",
        "notifications/initialized", "notifications/cancelled", "notifications/progress",
        "notifications/roots/list_changed",
    ]

    /// Whether `method` is decided by policy: everything that is not plumbing — `tools/call`, `resources/read`,
    /// `prompts/get`, `completion/complete`, and any method that is not an MCP method at all.
    public static func isGoverned(_ method: String) -> Bool { !plumbing.contains(method) }

    /// The policy target and arguments of a governed call: the tool name and `arguments` of `tools/call`, the URI
    /// of `resources/read`, the prompt name and `arguments` of `prompts/get`, and `params` for anything else.
    public static func target(of message: JSONRPCMessage) throws(MCPRequestError) -> (target: String?, arguments: JSONValue?) {
        let params = message.params?.objectValue
        func requiredString(_ key: String) throws(MCPRequestError) -> String {
            guard let params else { throw .invalidParams("\(message.method ?? "") needs params", id: message.id) }
            guard let value = params[key]?.stringValue, !value.isEmpty else {
                throw .invalidParams("\(message.method ?? "") needs a string \"\(key)\"", id: message.id)
            }
            return value
        }
        func arguments() throws(MCPRequestError) -> JSONValue? {
            guard let arguments = params?["arguments"] else { return nil }
            guard case .object = arguments else { throw .invalidParams("\"arguments\" must be an object", id: message.id) }
            return arguments
        }
        switch message.method {
        case "tools/call": return (try requiredString("name"), try arguments())
        case "prompts/get": return (try requiredString("name"), try arguments())
        case "resources/read": return (try requiredString("uri"), message.params)
        default: return (nil, message.params)
        }
    }

    /// Protocol versions that allow JSON-RPC batches (only 2025-03-26; a missing header is read as that version).
    public static func allowsBatches(protocolVersion: String?) -> Bool {
        (protocolVersion ?? "2025-03-26") == "2025-03-26"
    }

    /// Protocol versions mcpgw knows.
    public static let knownVersions: Set<String> = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
}

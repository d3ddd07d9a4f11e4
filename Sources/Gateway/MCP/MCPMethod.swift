import Policy
public import StrictJSON

/// How the gateway treats an MCP method, for both generations of the protocol: 2024-11-05 … 2025-11-25 ("legacy",
/// sessions and a GET stream) and 2026-07-28 ("modern", stateless). One table, documented in docs/protocol.md.
public enum MCPMethod {
    /// What the gateway does with a method.
    public enum Treatment: Equatable, Sendable {
        /// Decided by policy (default deny): it reaches a tool, a resource, a prompt or a task, or is not an MCP method.
        case governed
        /// Protocol plumbing: forwarded without a policy decision, still audited (lists are filtered on the way back).
        case plumbing
        /// Not part of this generation: refused with JSON-RPC `-32601` (method not found) and HTTP 404.
        case removed(since: String)
    }

    /// The generation a protocol version belongs to.
    public static func isModern(_ protocolVersion: String?) -> Bool { protocolVersion == "2026-07-28" }

    /// Methods that reach a server-side capability: always decided by policy.
    static let governed: Set<String> = [
        "tools/call", "resources/read", "prompts/get", "completion/complete", "tasks/get", "tasks/result", "tasks/list",
        "tasks/cancel", "tasks/update",
    ]

    /// Plumbing in every generation (the policy module's table: it refuses rules on these).
    static let plumbing: Set<String> = PolicyMethods.plumbing

    /// Legacy-only plumbing that 2026-07-28 removed.
    static let removedInModern: Set<String> = PolicyMethods.removedInModern

    /// What the gateway does with `method` sent under `protocolVersion` (nil: no header, read as 2025-03-26).
    public static func treatment(of method: String, protocolVersion: String?) -> Treatment {
        if governed.contains(method) { return .governed }
        if plumbing.contains(method) { return .plumbing }
        if removedInModern.contains(method) {
            return isModern(protocolVersion) ? .removed(since: "2026-07-28") : .plumbing
        }
        return .governed
    }

    /// Whether `method` is decided by policy under `protocolVersion`.
    public static func isGoverned(_ method: String, protocolVersion: String? = nil) -> Bool {
        treatment(of: method, protocolVersion: protocolVersion) == .governed
    }

    /// The policy target and arguments of a governed call: the tool name and `arguments` of `tools/call`, the URI
    /// of `resources/read`, the prompt name and `arguments` of `prompts/get`, and `params` for anything else; with
    /// where those arguments lie in the parsed body, when the message knows.
    public static func target(
        of message: JSONRPCMessage
    ) throws(MCPRequestError) -> (target: String?, arguments: JSONValue?, argumentBytes: Range<Int>?) {
        let params = message.params?.objectValue
        func requiredString(_ key: String) throws(MCPRequestError) -> String {
            guard let params else { throw .invalidParams("\(message.method ?? "") needs params", id: message.id) }
            guard let value = params[key]?.stringValue, !value.isEmpty else {
                throw .invalidParams("\(message.method ?? "") needs a string \"\(key)\"", id: message.id)
            }
            try checkTargetLength(value, key: key, of: message)
            return value
        }
        func arguments() throws(MCPRequestError) -> JSONValue? {
            guard let arguments = params?["arguments"] else { return nil }
            guard case .object = arguments else { throw .invalidParams("\"arguments\" must be an object", id: message.id) }
            return arguments
        }
        try refuseLenientVariants(in: message)
        switch message.method {
        case "tools/call": return (try requiredString("name"), try arguments(), message.argumentsBytes)
        case "prompts/get": return (try requiredString("name"), try arguments(), message.argumentsBytes)
        case "resources/read": return (try requiredString("uri"), message.params, message.paramsBytes)
        default: return (nil, message.params, message.paramsBytes)
        }
    }

    /// The longest tool or prompt name a call may name, in UTF-8 bytes (MCP asks for names of at most 128
    /// characters). A target keys the rate-limit buckets (in memory and in Redis), so its length is bounded.
    public static let maximumNameBytes = 512
    /// The longest resource URI a call may name, in UTF-8 bytes.
    public static let maximumURIBytes = 2048

    /// Refuses a target (`name`, or `uri` when `key` says so) longer than its bound.
    static func checkTargetLength(_ value: String, key: String, of message: JSONRPCMessage) throws(MCPRequestError) {
        let bound = key == "uri" ? maximumURIBytes : maximumNameBytes
        guard value.utf8.count <= bound else {
            throw .invalidParams(
                "\(message.method ?? "")'s \"\(key)\" is \(value.utf8.count) bytes long; the gateway takes at most \(bound)", id: message.id
            )
        }
    }

    /// Refuses a `params` member that a lenient server reads as one the gateway decides on without being exactly it
    /// (`Name`, `ARGUMENTS`, `argumentſ` for `tools/call` and `prompts/get`; `URI` for `resources/read` and
    /// `resources/subscribe`). Go's `encoding/json` takes the last of them, so such a server would act on what the
    /// policy never saw.
    static func refuseLenientVariants(in message: JSONRPCMessage) throws(MCPRequestError) {
        let keys: [StaticString]
        switch message.method {
        case "tools/call", "prompts/get": keys = ["name", "arguments"]
        case "resources/read", "resources/subscribe": keys = ["uri"]
        default: return
        }
        try refuseVariants(in: message.params?.objectValue, of: keys, where: "params", id: message.id)
    }

    /// Refuses a member of `object` (`place` names it in the error) that a lenient server reads as one of `keys`
    /// without being exactly it.
    static func refuseVariants(
        in object: JSONObject?, of keys: [StaticString], where place: String, id: JSONValue?
    ) throws(MCPRequestError) {
        for member in object?.members ?? [] {
            for key in keys where LenientKey.isVariant(member.key, of: key) {
                throw .invalidParams("\(place) member \"\(member.key)\" reads as \"\(key)\" to some servers; send \"\(key)\" only", id: id)
            }
        }
    }

    /// Protocol versions that allow JSON-RPC batches (only 2025-03-26; a missing header is read as that version).
    public static func allowsBatches(protocolVersion: String?) -> Bool {
        (protocolVersion ?? "2025-03-26") == "2025-03-26"
    }

    /// Protocol versions mcpgw knows.
    public static let knownVersions: Set<String> = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
}

import Identity
import Policy
import StrictJSON

/// Removes from list results what the caller may not use, with the same policy that decides the calls: tools it may
/// not call from `tools/list`, prompts it may not get from `prompts/list`, resources and resource templates it may
/// not read from `resources/list` and `resources/templates/list`. Listing never reveals more than calling allows
/// (calls are enforced separately, whatever a list said). A filtered result is marked `cacheScope: "private"`: it is
/// this caller's list, not the server's.
///
/// The same pass seals the task ids an answer carries (`TaskHandleRewrite`), so that an answer is read once however
/// many things in it are the caller's own.
struct ListFilter {
    /// The four kinds of list.
    enum Kind: String, CaseIterable, Sendable {
        case tools = "tools/list"
        case prompts = "prompts/list"
        case resources = "resources/list"
        case resourceTemplates = "resources/templates/list"

        /// The result's array.
        var resultKey: String {
            switch self {
            case .tools: "tools"
            case .prompts: "prompts"
            case .resources: "resources"
            case .resourceTemplates: "resourceTemplates"
            }
        }

        /// The member of each item that the governed method takes.
        var nameKey: String {
            switch self {
            case .tools, .prompts: "name"
            case .resources: "uri"
            case .resourceTemplates: "uriTemplate"
            }
        }

        /// The method a listed item is used with.
        var governedMethod: String {
            switch self {
            case .tools: "tools/call"
            case .prompts: "prompts/get"
            case .resources, .resourceTemplates: "resources/read"
            }
        }
    }

    /// The policy in force, read at every decision: a stream that stays open follows reloads.
    let currentPolicy: @Sendable () -> PolicySnapshot
    let principal: Principal
    /// The list requests of the POST this answers, by JSON-RPC id (serialised); nil on a GET stream, where any
    /// response shaped like a list result is filtered (a replayed list included).
    let requests: [String: Kind]?
    /// Every request id of the POST (canonical form); answers to those that are not lists are never filtered.
    var requestIDs: Set<String> = []
    /// Opens a list request id of the gateway's (`ListRequestIDs`) into the client's id: every answer under such an
    /// id, a result or an error, on any stream, gets the client's id back.
    var openListRequestID: (@Sendable (String) -> JSONValue?)?
    /// Told each tool a `tools/list` result declares, with its input schema (for `Mcp-Param-*` checks).
    var learnTool: (@Sendable (String, JSONValue?) -> Void)?
    /// Seals the task ids the answer carries to the caller (`TaskHandleRewrite`); nil where no task can appear.
    var sealTask: (@Sendable (String) -> String)?
    /// Which task ids here are the caller's: only those are sealed, and a server message about any other task is
    /// withheld. Nil: task ids are neither sealed nor looked at.
    var tasks: TaskOwnership?

    /// A filter for `principal`'s answers to `requests`, deciding by the policy `currentPolicy` returns.
    init(currentPolicy: @escaping @Sendable () -> PolicySnapshot, principal: Principal, requests: [String: Kind]?) {
        self.currentPolicy = currentPolicy
        self.principal = principal
        self.requests = requests
    }

    /// A filter deciding by one fixed policy snapshot.
    init(snapshot: PolicySnapshot, principal: Principal, requests: [String: Kind]?) {
        self.init(currentPolicy: { snapshot }, principal: principal, requests: requests)
    }

    /// Whether the caller could use the item `name` of a list of `kind` with some arguments.
    func mayUse(_ name: String, _ kind: Kind) -> Bool {
        // A name past the bound a call's target has could not be called (`MCPMethod.checkTargetLength`).
        guard name.utf8.count <= (kind.nameKey == "name" ? MCPMethod.maximumNameBytes : MCPMethod.maximumURIBytes) else { return false }
        let request = PolicyRequest(
            tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: kind.governedMethod, target: name,
            arguments: nil)
        return currentPolicy().tenants[principal.tenant]?.mayCall(request) ?? false
    }

    /// Whether `value` must not reach the caller at all: a `notifications/resources/updated` about a resource the
    /// caller may not read (now: the policy may have changed since it subscribed), or one that names no resource; or
    /// a batch of nothing else. Telling a caller when a resource changes tells it the resource exists. Decided as the
    /// read of that URI would be, argument conditions included (`readRequest`), not with the benefit of the doubt a
    /// list gets. Where task ownership is known (`tasks`), a server message about a task that is not the caller's is
    /// withheld too.
    func withholds(_ value: JSONValue) -> Bool {
        switch value {
        case .array(let elements):
            return !elements.isEmpty && elements.allSatisfy(withholds)
        case .object(let message):
            // A server message about a task that is not the caller's (its status, or a request or notification tied to
            // it): the caller could learn of, and answer for, another agent's task.
            if let tasks, TaskHandleRewrite.taskReferences(message).contains(where: { !tasks.owns($0) }) { return true }
            // Every spelling counts where a lenient reading kept repeated keys: any `method` naming an update makes
            // it one, and every `uri` it names must be readable.
            guard message.members.contains(where: { $0.key == "method" && $0.value.stringValue == Self.resourceUpdated }) else {
                return false
            }
            let uris = message.members.filter { $0.key == "params" }.flatMap { params in
                (params.value.objectValue?.members ?? []).filter { $0.key == "uri" }.map(\.value.stringValue)
            }
            guard !uris.isEmpty else { return true }
            let policy = currentPolicy()
            // A URI longer than a client may name is none the caller could read (and is not looked at: each
            // non-ASCII character of one costs a normalisation, found by review).
            return uris.contains { uri in
                guard let uri, uri.utf8.count <= MCPMethod.maximumURIBytes else { return true }
                return !policy.evaluate(Self.readRequest(uri, principal: principal)).outcome.permits
            }
        default:
            return false
        }
    }

    /// A batch with the notifications the caller may not see taken out; nil when nothing in it is withheld.
    func withoutWithheld(_ value: JSONValue) -> JSONValue? {
        guard case .array(let elements) = value else { return nil }
        let kept = elements.filter { !withholds($0) }
        return kept.count == elements.count ? nil : .array(kept)
    }

    /// The policy request of `principal` reading `uri` with `resources/read`, its params as a client sends them.
    static func readRequest(_ uri: String, principal: Principal) -> PolicyRequest {
        PolicyRequest(
            tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: "resources/read", target: uri,
            arguments: .object(JSONObject([.init(key: "uri", value: .string(uri))])))
    }

    /// The notification that tells a subscriber a resource changed.
    static let resourceUpdated = "notifications/resources/updated"

    /// A JSON-RPC message or batch with its list results filtered, task ids sealed and withheld notifications taken
    /// out, or nil when nothing in it is any of these (then the original bytes go on untouched). A message that is
    /// withheld as a whole is the caller's to drop (`withholds`).
    func filter(_ value: JSONValue) -> JSONValue? {
        switch value {
        case .array(let elements):
            var changed = false
            let filtered = elements.compactMap { element -> JSONValue? in
                if withholds(element) {
                    changed = true
                    return nil
                }
                guard let result = filter(element) else { return element }
                changed = true
                return result
            }
            return changed ? .array(filtered) : nil
        case .object(let message):
            var rewritten: JSONObject?
            if let result = message["result"]?.objectValue {
                let kinds = kinds(of: message, result)
                if !kinds.isEmpty { rewritten = filtered(message, result, kinds) }
            }
            if let sealTask, let tasks {
                tasks.learn(from: message)
                if let sealed = TaskHandleRewrite.sealed(rewritten ?? message, seal: sealTask, owns: tasks.owns) { rewritten = sealed }
            }
            if let openListRequestID, message["method"] == nil, case .string(let id)? = message["id"],
                id.hasPrefix(SessionHandles.listRequestPrefix), let original = openListRequestID(id)
            {
                rewritten = (rewritten ?? message).updating("id") { _ in original }
            }
            return rewritten.map(JSONValue.object)
        default:
            return nil
        }
    }

    /// `message` with its list results (of each of `kinds`) cut to what the caller may use, and marked private.
    private func filtered(_ message: JSONObject, _ result: JSONObject, _ kinds: [Kind]) -> JSONObject {
        var visible: [String: [JSONValue]] = [:]
        for kind in kinds {
            let items = result[kind.resultKey]?.arrayValue ?? []
            visible[kind.resultKey] = items.filter { item in
                guard let name = item.objectValue?[kind.nameKey]?.stringValue else { return false }
                return mayUse(name, kind)
            }
            if kind == .tools, let learnTool {
                for item in visible[kind.resultKey]! {
                    if let name = item.objectValue?["name"]?.stringValue { learnTool(name, item.objectValue?["inputSchema"]) }
                }
            }
        }
        var members = result.members.filter { $0.key != "cacheScope" }.map { member -> JSONObject.Member in
            visible[member.key].map { .init(key: member.key, value: .array($0)) } ?? member
        }
        members.append(.init(key: "cacheScope", value: .string("private")))
        return JSONObject(message.members.map { $0.key == "result" ? .init(key: "result", value: .object(JSONObject(members))) : $0 })
    }

    /// The kinds of list `result` holds: by the request's id on a POST (an id that matches no list request but whose
    /// result is shaped like a list is filtered too: an upstream may spell an id differently), by its shape on a GET
    /// stream; and every other list it is shaped to hold besides (a tools result carrying `prompts` too has both
    /// filtered: a client may read either). The shape is an array of objects under the list's key: one item without
    /// a name does not make a list pass unfiltered (`filtered` drops such items).
    private func kinds(of message: JSONObject, _ result: JSONObject) -> [Kind] {
        let shaped = Kind.allCases.filter { kind in
            guard let items = result[kind.resultKey]?.arrayValue else { return false }
            return items.contains { $0.objectValue != nil }
        }
        if let requests, let id = message["id"], let kind = requests[ExchangeDecisions.canonicalID(id) ?? id.serialized] {
            return [kind] + shaped.filter { $0 != kind }
        }
        if requests != nil, let id = message["id"], let key = ExchangeDecisions.canonicalID(id), requestIDs.contains(key) {
            return []  // the answer to a request that is not a list (a tool's own result)
        }
        return shaped
    }

    /// Why a complete JSON answer cannot go on: it is not strict JSON, or it is nothing but notifications the caller
    /// may not see.
    enum Unsendable: Error {
        case notJSON
        case withheld
    }

    /// A complete JSON response body with its list results filtered; an error when it is not strict JSON or is
    /// nothing but withheld notifications (it is then refused, never passed on unfiltered). Unchanged bytes when
    /// nothing in it is a list result.
    func filterJSON(_ bytes: [UInt8], maximumBytes: Int = 16 * 1024 * 1024) throws(Unsendable) -> [UInt8] {
        let limits = JSONLimits(maximumDepth: 64, maximumBytes: maximumBytes)
        guard let value = try? JSONParser.parse(bytes, limits: limits) else { throw .notJSON }
        if withholds(value) { throw .withheld }
        return filter(value)?.serializedBytes ?? bytes
    }
}

import Identity
import Policy
import StrictJSON

/// Removes from `tools/list` results the tools a caller may not call, so that listing never reveals more than
/// calling allows (calls are enforced separately, whatever the list said).
struct ToolListFilter {
    let snapshot: PolicySnapshot
    let principal: Principal

    /// Whether the caller could call `tool` with some arguments.
    func mayCall(_ tool: String) -> Bool {
        let request = PolicyRequest(
            tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: "tools/call",
            target: tool, arguments: nil)
        return snapshot.tenants[principal.tenant]?.mayCall(request) ?? false
    }

    /// A JSON-RPC response (or batch of them) with `result.tools` filtered; nil when the text is not strict JSON
    /// (it is then refused, never passed on unfiltered).
    func filterJSON(_ text: String) -> String? {
        guard let value = try? JSONParser.parse(text) else { return nil }
        return filter(value).serialized
    }

    /// Each SSE event's `data:` lines are a JSON-RPC message; the one carrying the tools/list result is filtered.
    /// Nil when an event's data is not strict JSON.
    func filterEventStream(_ text: String) -> String? {
        // SSE lines end in CRLF, LF or CR; normalise to LF (a valid SSE line ending) before splitting events.
        let normalised = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        var output: [String] = []
        for event in normalised.components(separatedBy: "\n\n") {
            let lines = event.split(separator: "\n", omittingEmptySubsequences: false)
            let data = lines.filter { $0.hasPrefix("data:") }.map { $0.dropFirst(5).drop { $0 == " " } }.joined(separator: "\n")
            guard !data.isEmpty else {
                output.append(event)
                continue
            }
            guard let value = try? JSONParser.parse(String(data)) else { return nil }
            let kept = lines.filter { !$0.hasPrefix("data:") }.map(String.init)
            output.append((kept + ["data: " + filter(value).serialized]).joined(separator: "\n"))
        }
        return output.joined(separator: "\n\n")
    }

    private func filter(_ value: JSONValue) -> JSONValue {
        switch value {
        case .array(let elements):
            return .array(elements.map(filter))
        case .object(let message):
            guard let result = message["result"]?.objectValue, let tools = result["tools"]?.arrayValue else { return value }
            let visible = tools.filter { tool in tool.objectValue?["name"]?.stringValue.map(mayCall) ?? false }
            let newResult = JSONObject(result.members.map { $0.key == "tools" ? .init(key: "tools", value: .array(visible)) : $0 })
            return .object(JSONObject(message.members.map { $0.key == "result" ? .init(key: "result", value: .object(newResult)) : $0 }))
        default:
            return value
        }
    }
}

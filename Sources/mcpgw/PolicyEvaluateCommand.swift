import ArgumentParser
import Foundation
import Policy
import StrictJSON

extension PolicyCommand {
    /// `mcpgw policy evaluate`: many calls, one JSON line each way, for scripts and differential tests.
    struct Evaluate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decide calls read as JSON lines from standard input; print one JSON decision per line.",
            discussion: """
                Each input line is an object: {"tenant": …, "agent": …, "method": "tools/call", "tool": … or "target": …, \
                "arguments": {…}, "scopes": […]}. Each output line is what `policy explain --json` prints for that call, or \
                {"error": …} for a line that cannot be read. Rate limits are not consumed.
                """)

        @Option(help: "The policies directory.")
        var policies: String = "policies"

        func run() throws {
            let snapshot = try PolicyCommand.loadSnapshot(policies)
            while let line = readLine(strippingNewline: true) {
                guard !line.isEmpty else { continue }
                do {
                    let call = try JSONObjectReader(try JSONParser.parse(line))
                    try call.requireOnlyKeys(["tenant", "agent", "method", "tool", "target", "arguments", "scopes"])
                    let request = PolicyRequest(
                        tenant: try call.requiredString("tenant"), agent: try call.requiredString("agent"),
                        scopes: Set(try call.strings("scopes") ?? []), method: try call.string("method") ?? "tools/call",
                        target: try call.string("tool") ?? call.string("target"), arguments: call.object["arguments"])
                    let decision = snapshot.evaluate(request)
                    let considered = snapshot.tenants[request.tenant]?.candidateRules(for: request) ?? []
                    print(Explain.json(decision, considered: considered, limits: []).serialized)
                } catch {
                    print(JSONValue.object(JSONObject([.init(key: "error", value: .string("\(error)"))])).serialized)
                }
            }
        }
    }
}

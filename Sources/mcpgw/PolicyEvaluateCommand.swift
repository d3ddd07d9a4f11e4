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
                "arguments": {…}, "scopes": […]}; "arguments" are the call's for tools/call and prompts/get, and the \
                request's params for other methods (for resources/read, "target" is their "uri"). Each output line is what `policy explain --json` prints for that call, or \
                {"error": …} for a line that cannot be read. Rate limits are not consumed.
                """)

        @Option(help: "The policies directory, or one policy file (applied to every tenant).")
        var policies: String = "policies"

        func run() throws {
            // A policy file applies to every tenant: its snapshot is made for the tenants the lines name.
            var snapshots: [String: PolicySnapshot] = [:]
            var isDirectory: ObjCBool = false
            let singleFile = FileManager.default.fileExists(atPath: policies, isDirectory: &isDirectory) && !isDirectory.boolValue
            // Loaded once up front either way: a policy that does not load is one error, not one per line.
            let loaded = try PolicyCommand.loadSnapshot(policies, tenants: [])
            let directorySnapshot = singleFile ? nil : loaded
            while let line = readLine(strippingNewline: true) {
                guard !line.isEmpty else { continue }
                do {
                    let call = try JSONObjectReader(try JSONParser.parse(line))
                    try call.requireOnlyKeys(["tenant", "agent", "method", "tool", "target", "arguments", "scopes"])
                    let method = try call.string("method") ?? "tools/call"
                    let target = try call.string("tool") ?? call.string("target")
                    let request = PolicyRequest(
                        tenant: try call.requiredString("tenant"), agent: try call.requiredString("agent"),
                        scopes: Set(try call.strings("scopes") ?? []), method: method, target: target,
                        arguments: try PolicyCommand.decidedArguments(method: method, target: target, given: call.object["arguments"]))
                    if let problem = PolicyMethods.neverDecidedProblem(request.method) {
                        throw ValidationError("method: \(problem)")
                    }
                    let snapshot: PolicySnapshot
                    if let directorySnapshot {
                        snapshot = directorySnapshot
                    } else if let known = snapshots[request.tenant] {
                        snapshot = known
                    } else {
                        snapshot = try PolicySnapshot.load(file: policies, tenants: [request.tenant])
                        snapshots[request.tenant] = snapshot
                    }
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

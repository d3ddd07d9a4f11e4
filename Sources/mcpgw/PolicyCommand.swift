import ArgumentParser
import Foundation
import Policy
import StrictJSON

/// `mcpgw policy`: validate policy directories and explain decisions with the gateway's own evaluator.
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Validate policies and explain decisions.",
        subcommands: [Check.self, Explain.self, Evaluate.self]
    )

    /// The policies in `directory`, or a validation error that says why they cannot be loaded.
    static func loadSnapshot(_ path: String, tenants: [String]) throws -> PolicySnapshot {
        do {
            return try load(path, tenants: tenants)
        } catch {
            FileHandle.standardError.write(Data("error: cannot load policies: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    /// A policies directory, or one classic policy document applied to `tenants` (as `serve --policies FILE` does).
    static func load(_ path: String, tenants: [String]) throws(PolicyLoadError) -> PolicySnapshot {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            return try PolicySnapshot.load(file: path, tenants: tenants)
        }
        return try PolicySnapshot.load(directory: path)
    }

    /// The arguments the gateway decides a call with, from what `explain` or `evaluate` was given: for `resources/read`
    /// these are the request's `params`, whose `uri` is the target (found by review: explain answered `allow` for a
    /// read the gateway denied by an argument rule on `uri`, which it never saw); for every other method, `given`.
    static func decidedArguments(method: String, target: String?, given: JSONValue?) throws -> JSONValue? {
        guard method == "resources/read", let target else { return given }
        guard let given else { return .object(JSONObject([.init(key: "uri", value: .string(target))])) }
        guard let object = given.objectValue else { throw ValidationError("arguments of resources/read must be an object") }
        if let uri = object["uri"] {
            guard uri.stringValue == target else {
                throw ValidationError("the arguments' \"uri\" is not the target; for resources/read they are the request's params")
            }
            return given
        }
        return .object(JSONObject([.init(key: "uri", value: .string(target))] + object.members))
    }

    /// `mcpgw policy check DIR`.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Validate a policies directory (policies/<tenant>/*.json, optional _global/) or one policy file. Exit 1 on the first error."
        )

        @Argument(help: "The policies directory, or one policy file (applied to every tenant).")
        var directory: String = "policies"

        func run() throws {
            do {
                let snapshot = try PolicyCommand.load(directory, tenants: ["(every tenant)"])
                for (tenant, set) in snapshot.tenants.sorted(by: { $0.key < $1.key }) {
                    print(
                        "\(tenant): \(set.documents.count) documents, \(set.ruleCount) rules, \(set.rateLimits.count) rate limits, default \(set.defaultAction.rawValue)"
                    )
                }
                print("ok: \(snapshot.tenants.count) tenants, \(snapshot.globalDocuments.count) global documents")
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode.failure
            }
        }
    }

    /// `mcpgw policy explain`.
    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what the gateway would decide for a call, and why.",
            discussion: "Rate limits are listed but not consumed: explain describes a single call.")

        @Option(help: "The policies directory, or one policy file (applied to every tenant).")
        var policies: String = "policies"
        @Option(help: "Tenant of the caller.")
        var tenant: String
        @Option(help: "Agent id of the caller.")
        var agent: String
        @Option(help: "MCP method.")
        var method: String = "tools/call"
        @Option(help: "Tool name (tools/call).")
        var tool: String?
        @Option(help: "Resource URI (resources/read) or prompt name (prompts/get).")
        var target: String?
        @Option(
            help:
                "Arguments as a JSON object: the call's `arguments` for tools/call and prompts/get; for other methods the request's `params` (for resources/read, --target is its `uri`)."
        )
        var args: String = "{}"
        @Option(help: "Space-separated token scopes of the caller.")
        var scopes: String = ""
        @Flag(help: "Print one JSON object instead of text.")
        var json = false

        func run() throws {
            // What the gateway never asks the policy about has no policy answer to explain.
            if let problem = PolicyMethods.neverDecidedProblem(method) { throw ValidationError("--method: \(problem)") }
            let snapshot = try PolicyCommand.loadSnapshot(policies, tenants: [tenant])
            let arguments: JSONValue
            do {
                arguments = try JSONParser.parse(args)
            } catch {
                throw ValidationError("--args is not valid JSON: \(error)")
            }
            let request = PolicyRequest(
                tenant: tenant, agent: agent, scopes: Set(scopes.split(separator: " ").map(String.init)), method: method,
                target: tool ?? target,
                arguments: try PolicyCommand.decidedArguments(method: method, target: tool ?? target, given: arguments))
            let decision = snapshot.evaluate(request)
            let considered = snapshot.tenants[tenant]?.candidateRules(for: request) ?? []
            let limits =
                snapshot.tenants[tenant]?.rateLimits.filter { $0.counts(method: method, target: request.target, agent: agent) } ?? []
            if json {
                print(Self.json(decision, considered: considered, limits: limits).serialized)
            } else {
                print("decision: \(decision.outcome.name)")
                print("rule:     \(decision.rule) (\(decision.document))")
                print("reason:   \(decision.reason)")
                print("considered \(considered.count) rule(s) from the index: \(considered.joined(separator: ", "))")
                for match in decision.matches {
                    print(
                        "  matched \(match.rule) [\(match.document)] \(match.action.rawValue) → \(match.effect.rawValue): \(match.reason)")
                    for finding in match.findings {
                        // JSON string escaping keeps control characters (NUL, newlines) from reaching the terminal raw.
                        print("    argument \(finding.location) = \(JSONValue.string(finding.value).serialized): \(finding.problem)")
                    }
                }
                for limit in limits {
                    print("rate limit \(limit.id): \(limit.ratePerSecond)/s, burst \(limit.burstText), per \(limit.scope.rawValue)")
                }
            }
            if !decision.outcome.permits { throw ExitCode(2) }
        }

        static func json(_ decision: PolicyDecision, considered: [String], limits: [RateLimitRule]) -> JSONValue {
            .object(
                JSONObject([
                    .init(key: "decision", value: .string(decision.outcome.name)),
                    .init(key: "rule", value: .string(decision.rule)),
                    .init(key: "document", value: .string(decision.document)),
                    .init(key: "reason", value: .string(decision.reason)),
                    .init(key: "log_arguments", value: .bool(decision.logArguments)),
                    .init(key: "considered", value: .array(considered.map(JSONValue.string))),
                    .init(
                        key: "matches",
                        value: .array(
                            decision.matches.map { match in
                                .object(
                                    JSONObject([
                                        .init(key: "rule", value: .string(match.rule)),
                                        .init(key: "document", value: .string(match.document)),
                                        .init(key: "action", value: .string(match.action.rawValue)),
                                        .init(key: "effect", value: .string(match.effect.rawValue)),
                                        .init(key: "reason", value: .string(match.reason)),
                                        .init(
                                            key: "arguments",
                                            value: .array(
                                                match.findings.map { finding in
                                                    .object(
                                                        JSONObject([
                                                            .init(key: "location", value: .string(finding.location)),
                                                            .init(key: "canonical_value", value: .string(finding.value)),
                                                            .init(key: "problem", value: .string(finding.problem)),
                                                        ]))
                                                })),
                                    ]))
                            })),
                    .init(
                        key: "rate_limits",
                        value: .array(
                            limits.map { limit in
                                .object(
                                    JSONObject([
                                        .init(key: "id", value: .string(limit.id)),
                                        .init(
                                            key: "rate_per_second", value: JSONNumber(limit.ratePerSecond).map(JSONValue.number) ?? .null),
                                        .init(
                                            key: "burst",
                                            value: limit.burst < 1e15 && limit.burst == limit.burst.rounded(.down)
                                                ? .number(JSONNumber(Int64(limit.burst)))
                                                : JSONNumber(limit.burst).map(JSONValue.number) ?? .null),
                                        .init(key: "per", value: .string(limit.scope.rawValue)),
                                    ]))
                            })),
                ]))
        }
    }
}

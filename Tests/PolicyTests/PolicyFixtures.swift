import Foundation
import Policy
import StrictJSON

/// Helpers for building policy sets from inline JSON and for the shipped `policies/` directory.
enum PolicyFixtures {
    static let repositoryPolicies: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("policies").path
    }()

    static func document(_ json: String, name: String = "test") throws -> PolicyDocument {
        try PolicyDocument.parse(Array(json.utf8), file: "\(name).json", defaultName: name)
    }

    static func set(_ documents: String..., tenant: String = "acme") throws -> TenantPolicySet {
        TenantPolicySet(tenant: tenant, documents: try documents.enumerated().map { try document($1, name: "doc\($0)") })
    }

    static func call(
        _ tool: String, _ arguments: String = "{}", agent: String = "bot1", tenant: String = "acme",
        scopes: Set<String> = []
    ) throws -> PolicyRequest {
        PolicyRequest(
            tenant: tenant, agent: agent, scopes: scopes, method: "tools/call", target: tool,
            arguments: try JSONParser.parse(arguments))
    }

    /// `set`'s decision on acme's bot1 calling `tool` with one string argument, `key`: `value`.
    static func decide(_ set: TenantPolicySet, tool: String = "t", _ key: String, _ value: String) -> PolicyDecision {
        set.evaluate(
            PolicyRequest(
                tenant: "acme", agent: "bot1", target: tool, arguments: .object(JSONObject([.init(key: key, value: .string(value))]))))
    }

    static func shipped() throws -> PolicySnapshot { try PolicySnapshot.load(directory: repositoryPolicies) }
}

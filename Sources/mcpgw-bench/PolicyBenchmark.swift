import Foundation
import Policy
import StrictJSON

/// Decision cost with 1,000 tenants of 1,000 rules each: ns per decision for exact-name, prefix-pattern,
/// argument-checked and default-deny calls, against the cost of a single-rule tenant in the same run; and the
/// memory the loaded policies take.
enum PolicyBenchmark {
    static func run(iterations: Int, tenants tenantCount: Int, rulesPerTenant: Int) throws {
        let before = residentBytes()
        var documents: [String: [PolicyDocument]] = [:]
        let loadStart = ContinuousClock.now
        for tenant in 0..<tenantCount {
            documents["t\(tenant)"] = [try document(tenant: tenant, rules: rulesPerTenant)]
        }
        documents["small"] = [
            try PolicyDocument.parse(
                Array(#"{"rules":[{"id":"S","action":"allow","tools":["tool_1"]}]}"#.utf8), file: "small", defaultName: "small")
        ]
        let snapshot = PolicySnapshot(tenantDocuments: documents, globalDocuments: [], directory: "")
        let loaded = ContinuousClock.now - loadStart
        let after = residentBytes()
        print(
            "loaded \(tenantCount) tenants × \(rulesPerTenant) rules in \(loaded); resident memory +\((after - before) / 1_048_576) MiB (\(after / 1_048_576) MiB total)"
        )

        let arguments = try JSONParser.parse(#"{"path":"docs/report.txt","opts":{"mode":"r"}}"#)
        let cases: [(String, PolicyRequest)] = [
            ("1-rule tenant, exact name (baseline)", PolicyRequest(tenant: "small", agent: "bot1", target: "tool_1", arguments: arguments)),
            ("exact tool name", PolicyRequest(tenant: "t500", agent: "bot1", target: "tool_700", arguments: arguments)),
            ("prefix pattern", PolicyRequest(tenant: "t500", agent: "bot1", target: "ns42_write", arguments: arguments)),
            ("argument constraints (path rules)", PolicyRequest(tenant: "t500", agent: "bot1", target: "files_read", arguments: arguments)),
            ("no rule matches (default deny)", PolicyRequest(tenant: "t500", agent: "bot1", target: "unknown_tool", arguments: arguments)),
        ]
        var baseline = 0.0
        for (name, request) in cases {
            let perDecision = measure(iterations: iterations) { snapshot.evaluate(request).outcome.permits }
            if baseline == 0 { baseline = perDecision }
            let decision = snapshot.evaluate(request)
            print(
                name.padding(toLength: 40, withPad: " ", startingAt: 0)
                    + String(
                        format: "%9.0f ns/decision  %5.2fx baseline  (%@ by %@, %d rules considered)", perDecision, perDecision / baseline,
                        decision.outcome.name, decision.rule, snapshot.tenants[request.tenant]!.candidateRules(for: request).count))
        }
    }

    /// One tenant's document: 800 exact-name rules, 150 prefix rules, 50 rules with argument constraints.
    static func document(tenant: Int, rules: Int) throws -> PolicyDocument {
        var items: [String] = []
        for index in 0..<rules {
            switch index % 20 {
            case 0..<16: items.append(#"{"id":"E\#(index)","action":"allow","tools":["tool_\#(index)"],"agents":["bot*"]}"#)
            case 16..<19:
                items.append(#"{"id":"P\#(index)","action":"\#(index % 2 == 0 ? "audit" : "deny")","tools":["ns\#(index / 20)_*"]}"#)
            default:
                items.append(
                    #"{"id":"C\#(index)","action":"allow","tools":["files_\#(index == 19 ? "read" : "op\(index)")"],"args":{"path":{"path":{"allow_traversal":false},"detectors":["path_traversal"]},"*":{"detectors":["shell_metacharacters"]}}}"#
                )
            }
        }
        let json = #"{"name":"t\#(tenant)","default_action":"deny","rules":[\#(items.joined(separator: ","))]}"#
        return try PolicyDocument.parse(Array(json.utf8), file: "t\(tenant).json", defaultName: "t\(tenant)")
    }

    static func measure(iterations: Int, _ body: () -> Bool) -> Double {
        var sink = 0
        for _ in 0..<max(1, iterations / 10) where body() { sink += 1 }
        let elapsed = ContinuousClock().measure {
            for _ in 0..<iterations where body() { sink += 1 }
        }
        if sink < 0 { print(sink) }
        return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(iterations)
    }

    /// Resident set size from /proc/self/statm.
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }
}

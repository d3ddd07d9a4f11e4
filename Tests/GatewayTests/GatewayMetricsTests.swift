import Foundation
import Policy
import Testing

@testable import Gateway

/// The counters each kind of record increments are remembered; a policy reload must not keep labels checked against
/// the old policies.
@Suite("Gateway metrics, remembered series")
struct GatewayMetricsTests {
    private static func policy(rules: [String]) throws -> PolicySnapshot {
        let rulesJSON = rules.map { #"{"id":"\#($0)","action":"allow","tools":["t_\#($0)"]}"# }.joined(separator: ",")
        let document = try PolicyDocument.parse(
            Array(#"{"default_action":"deny","rules":[\#(rulesJSON)]}"#.utf8), file: "acme/p.json", defaultName: "p")
        return PolicySnapshot(tenantDocuments: ["acme": [document]], globalDocuments: [], directory: "/nonexistent")
    }

    private static func record(rule: String, method: String = "tools/call") -> AuditRecord {
        var record = AuditRecord(requestID: "r", httpMethod: "POST", decision: .allow, reason: "ok")
        record.tenant = "acme"
        record.method = method
        record.rule = rule
        return record
    }

    private static func count(_ metrics: GatewayMetrics, _ series: String) -> Int? {
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Int($0.split(separator: " ").last!) }
    }

    @Test("a rule added by a reload gets its own label, though its kind of record was counted (as other) before")
    func reloadForgetsRememberedSeries() throws {
        let metrics = GatewayMetrics(policy: try Self.policy(rules: ["R1"]))
        for _ in 0..<3 { metrics.observe([Self.record(rule: "R9")]) }
        #expect(Self.count(metrics, #"mcpgw_policy_decisions_total{tenant="acme",decision="allow",rule="other"}"#) == 3)
        metrics.policiesReloaded(try Self.policy(rules: ["R1", "R9"]))
        for _ in 0..<2 { metrics.observe([Self.record(rule: "R9")]) }
        #expect(Self.count(metrics, #"mcpgw_policy_decisions_total{tenant="acme",decision="allow",rule="R9"}"#) == 2)
        #expect(Self.count(metrics, #"mcpgw_policy_decisions_total{tenant="acme",decision="allow",rule="other"}"#) == 3)
        #expect(Self.count(metrics, #"mcpgw_requests_total{tenant="acme",method="tools/call",decision="allow"}"#) == 5)
    }

    @Test("records with methods the client made up are counted (as other), each once, and not remembered")
    func madeUpMethods() throws {
        let metrics = GatewayMetrics(policy: try Self.policy(rules: ["R1"]))
        let kinds = GatewayMetrics.rememberedRecordKinds + 50
        for index in 0..<kinds { metrics.observe([Self.record(rule: "R1", method: "made/up\(index)")]) }
        for index in 0..<kinds { metrics.observe([Self.record(rule: "R1", method: "made/up\(index)")]) }
        #expect(Self.count(metrics, #"mcpgw_requests_total{tenant="acme",method="other",decision="allow"}"#) == 2 * kinds)
        #expect(metrics.rememberedKinds == 0)
        metrics.observe([Self.record(rule: "R1")])
        #expect(metrics.rememberedKinds == 1)
    }
}

@Suite("One line per log entry")
struct OneLineLogHandlerTests {
    @Test("control characters a peer put in a logged value are escaped: no forged log line")
    func escapes() {
        #expect(OneLineLogHandler.escaped("https://idp.test/jwks") == "https://idp.test/jwks")
        let forged = OneLineLogHandler.escaped("https://idp.test/jwks\r\n2026-11-26T00:00:00+0000 error forged: admin logged in")
        #expect(!forged.contains("\n") && !forged.contains("\r") && forged.contains("\\u{D}\\u{A}2026"))
        #expect(OneLineLogHandler.escaped("a\u{2028}b\u{85}c\u{1B}[31m") == "a\\u{2028}b\\u{85}c\\u{1B}[31m")
        let value = OneLineLogHandler.escaped(.dictionary(["url": .array([.string("x\ny")])]))
        #expect(value == .dictionary(["url": .array([.string("x\\u{A}y")])]))
    }
}

/// Every rule name the gateway writes into audit records is a label value of its own (found by review: fifteen of
/// them, `pipeline_depth`, `slow_reader`, `http_upgrade`, `batch`, …, were counted as `other`). Read from the sources,
/// so that a new one cannot be forgotten.
@Suite("Gateway metrics, the gateway's own reasons")
struct GatewayReasonLabelTests {
    @Test func everyRuleNameTheGatewayWritesIsALabel() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Gateway")
        let files = try #require(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
        // Every lower-case literal on a line that sets a rule (`rule: "x"`, `rule: c ? "x" : "y"`, `rule = "x"`, the
        // budgets' `(reason, rule, status)` tuples).
        var names: Set<String> = []
        for case let file as URL in files where file.pathExtension == "swift" {
            for line in try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
            where line.contains("rule: ") || line.contains("rule = \"") || line.contains("_budget\"") {
                // (Not a method name given on the same line.)
                let setting = line.replacing(#/method: [^,)]*/#, with: "")
                for match in setting.matches(of: #/"([a-z]+(?:_[a-z]+)*)"/#) { names.insert(String(match.output.1)) }
            }
        }
        #expect(names.count > 30, "\(names.sorted())")
        let missing = names.subtracting(GatewayMetrics.gatewayReasons)
        #expect(missing.isEmpty, "rule names counted as `other`: \(missing.sorted())")
    }

    /// An authentication failure's rule is its `AuthenticationError.code` (found while adding `wrong_token_type`).
    @Test func everyAuthenticationCodeIsALabel() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Identity/AuthenticationError.swift")
        let text = try String(contentsOf: file, encoding: .utf8)
        let start = try #require(text.range(of: "public var code: String {"))
        let end = try #require(text.range(of: "public var publicReason", range: start.upperBound..<text.endIndex))
        let codes = Set(text[start.upperBound..<end.lowerBound].matches(of: #/"([a-z]+(?:_[a-z]+)*)"/#).map { String($0.output.1) })
        #expect(codes.count > 20, "\(codes.sorted())")
        let missing = codes.subtracting(GatewayMetrics.gatewayReasons)
        #expect(missing.isEmpty, "authentication codes counted as `other`: \(missing.sorted())")
    }
}

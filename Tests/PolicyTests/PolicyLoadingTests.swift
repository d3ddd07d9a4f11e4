import Foundation
import Policy
import StrictJSON
import Testing

@Suite("Policy loading, validation and reload")
struct PolicyLoadingTests {
    @Test(
        "mistakes are load errors naming the file, the rule and the field",
        arguments: [
            (#"{"rules":[{"id":"R1","action":"allow","tools":["x"],"tool":["y"]}]}"#, "rule R1: rules[0].tool: unknown key"),
            (#"{"rules":[{"id":"R1","action":"permit","tools":["x"]}]}"#, "rule R1: rules[0].action: unknown action 'permit'"),
            (#"{"rules":[{"id":"R1","action":"allow","tools":["x\\"]}]}"#, "rule R1: rules[0].tools[0]: malformed pattern"),
            (
                #"{"rules":[{"id":"R1","action":"deny","tools":["x"],"args":{"p":{"deny":["(a"]}}}]}"#,
                "rule R1: rules[0].args.p.deny[0]: invalid regular expression"
            ),
            (#"{"rules":[{"id":"R1","action":"deny","tools":["x"],"args":{"p":{"detectors":["xss"]}}}]}"#, "unknown detector 'xss'"),
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"]},{"id":"R1","action":"deny","tools":["y"]}]}"#,
                "rule R1: rules[1].id: duplicate rule id"
            ),
            (#"{"rules":[{"action":"allow","tools":["x"]}]}"#, "every rule needs an id"),
            (#"{"rules":[{"id":"R1","action":"allow"}]}"#, "a rule names tools, resources, prompts or methods"),
            (#"{"rules":[{"id":"R1","action":"deny","tools":["x"],"scopes":["s"]}]}"#, "scopes belong on allow or audit rules"),
            (#"{"default_action":"maybe"}"#, "default_action: unknown action"),
            (#"{"rate_limits":[{"id":"L","rate_per_second":0}]}"#, "rate_per_second: is required and must be positive"),
            (#"{"rules":[],"rules":[]}"#, "duplicate key"),
            (#"{"rules":[{"id":"R1","action":"allow","tools":[]}]}"#, "must not be empty"),
            // Found by review: each of these loaded and never applied.
            (#"{"rules":[{"id":"R1","action":"deny","tools":["x"],"args":{"cmd":{}}}]}"#, "rules[0].args.cmd: checks nothing"),
            (#"{"rules":[{"id":"R1","action":"deny","tools":["x"],"args":{"cmd":{"deny":[]}}}]}"#, "checks nothing"),
            (#"{"rate_limits":[{"id":"L","rate_per_second":1,"burst":1,"methods":[]}]}"#, "rate_limits[0].methods: is empty"),
            (#"{"rate_limits":[{"id":"L","rate_per_second":1e400,"burst":1}]}"#, "rate_per_second: 1e400 is out of range"),
            (#"{"rules":[{"id":"R1","action":"deny","tools":["x"],"args":{"p":{"max_length":1.5}}}]}"#, "1.5 is not a whole number"),
            (#"{"rules":[{"id":"R1","action":"deny","methods":["tools/list"]}]}"#, "rules[0].methods[0]: tools/list is protocol plumbing"),
            (#"{"rules":[{"id":"R1","action":"deny","methods":["initialize"]}]}"#, "initialize is protocol plumbing"),
            (
                #"{"rules":[{"id":"R1","action":"deny","methods":["resources/subscribe"]}]}"#,
                "resources/subscribe is decided as resources/read"
            ),
            (
                #"{"rate_limits":[{"id":"L","rate_per_second":1,"burst":1,"methods":["notifications/initialized"]}]}"#,
                "rate_limits[0].methods[0]: notifications/initialized is a notification"
            ),
            (
                #"{"rate_limits":[{"id":"L","rate_per_second":1,"burst":1,"methods":["resources/subscribe"]}]}"#,
                "resources/subscribe is decided as resources/read"
            ),
            (
                #"{"rate_limits":[{"id":"L","rate_per_second":1,"burst":1,"methods":["tools/call","tools/list"],"tools":["x"]}]}"#,
                "rate_limits[0].tools: selects calls by tool name, and tools/list names no tool"
            ),
            (
                #"{"rules":[{"id":"R1","action":"deny","tools":["x"],"args":{"p":{"deny":["[[:digit:]]"]}}}]}"#,
                "'[' inside [...] must be escaped"
            ),
            // Found by review: prefixes no value can ever lie under (values are compared canonical and normalised).
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"p":{"path":{"allowed_prefixes":["/srv/data"]}}}}]}"#,
                #"args.p.path.allowed_prefixes[0]: '/srv/data' is absolute, and no absolute path is admitted without "allow_absolute": true"#
            ),
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"p":{"path":{"allowed_prefixes":["docs","./docs"]}}}}]}"#,
                "allowed_prefixes[1]: './docs' is compared with normalised paths (no '.', '..' or empty segments), and is not one"
            ),
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"p":{"path":{"allowed_prefixes":["ｄocs"]}}}}]}"#,
                "'ｄocs' is compared with canonical values, and is not one: write it as 'docs'"
            ),
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"q":{"read_only_sql":true,"sql_dialects":["postgres"]}}}]}"#,
                "args.q.sql_dialects[0]: unknown SQL dialect 'postgres' (mysql, postgresql, sqlserver, sqlite)"
            ),
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"q":{"read_only_sql":true,"sql_dialects":[]}}}]}"#,
                "sql_dialects: names no database"
            ),
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"q":{"max_length":9,"sql_dialects":["mysql"]}}}]}"#,
                "sql_dialects: applies to read_only_sql and the sql_injection detector, and this argument has neither"
            ),
            // Found by review: the tools narrowed tools/call only, and the rule allowed every prompt and resource.
            (
                #"{"rules":[{"id":"M1","action":"allow","methods":["tools/call","prompts/get","resources/read"],"tools":["safe_tool"]}]}"#,
                "rules[0].resources: the rule lists 'resources/read' but no 'resources'"
            ),
            (
                #"{"rules":[{"id":"M1","action":"allow","methods":["tools/call","resources/read"],"resources":["file:///w/*"]}]}"#,
                "rules[0].tools: the rule lists 'tools/call' but no 'tools'"
            ),
            // Found by the third review: a prefix canonically equivalent to its canonical form, but not in it, admitted nothing.
            (
                #"{"rules":[{"id":"R1","action":"allow","tools":["x"],"args":{"p":{"path":{"allowed_prefixes":["\u212Ab"]}}}}]}"#,
                "is compared with canonical values, and is not one: write it as 'Kb'"
            ),
            (
                #"{"rules":[{"id":"M1","action":"allow","methods":["tools/call","completion/complete"],"tools":["safe_tool"]}]}"#,
                "rules[0].methods[1]: 'completion/complete' takes no tools, resources or prompts"
            ),
        ])
    func loadErrors(json: String, expected: String) {
        #expect {
            try PolicyDocument.parse(Array(json.utf8), file: "policies/acme/p.json", defaultName: "p")
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("policies/acme/p.json") && text.contains(expected)
        }
    }

    func temporaryPolicies(_ files: [String: String]) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-policies-\(UUID())").path
        for (path, content) in files {
            let full = root + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try content.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test("reload swaps in a valid snapshot; an invalid one is refused and the old one keeps serving")
    func reload() throws {
        let root = try temporaryPolicies(["acme/p.json": #"{"rules":[{"id":"A","action":"allow","tools":["x"]}]}"#])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let engine = try PolicyEngine(directory: root)
        let call = try PolicyFixtures.call("x")
        #expect(engine.decide(call, now: 0).outcome == .allow)
        try #"{"rules":[{"id":"A","action":"deny","tools":["x"]}]}"#.write(toFile: root + "/acme/p.json", atomically: true, encoding: .utf8)
        try engine.reload()
        #expect(engine.decide(call, now: 0).outcome == .deny)
        try #"{"rules":[{"id":"A","action":"allow","tools":["x"],"typo":1}]}"#.write(
            toFile: root + "/acme/p.json", atomically: true, encoding: .utf8)
        #expect(throws: PolicyLoadError.self) { try engine.reload() }
        #expect(engine.decide(call, now: 0).outcome == .deny)
    }

    @Test("a reload without policies for a tenant the configuration has is refused, as start-up is (found by review)")
    func reloadKeepsConfiguredTenants() throws {
        let root = try temporaryPolicies([
            "acme/p.json": #"{"rules":[{"id":"A","action":"allow","tools":["x"]}]}"#, "globex/p.json": #"{"rules":[]}"#,
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let engine = try PolicyEngine(directory: root)
        try FileManager.default.removeItem(atPath: root + "/acme")
        #expect { try engine.reload(requiring: ["acme", "globex"]) } throws: { "\($0)".contains("no policies for tenant acme") }
        #expect(engine.decide(try PolicyFixtures.call("x"), now: 0).outcome == .allow)
        #expect(throws: Never.self) { try engine.reload(requiring: ["globex"]) }
    }

    @Test("hidden files in a tenant folder are skipped like hidden folders; a link to nothing is an error (found by review)")
    func hiddenAndDanglingEntries() throws {
        let root = try temporaryPolicies([
            "acme/p.json": #"{"rules":[{"id":"A","action":"deny","tools":["x"]}]}"#,
            "acme/.allow-all.json": #"{"default_action":"allow","rules":[{"id":"B","action":"allow","tools":["*"]}]}"#,
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let snapshot = try PolicySnapshot.load(directory: root)
        #expect(snapshot.tenants["acme"]?.documents.count == 1)
        #expect(snapshot.evaluate(try PolicyFixtures.call("x")).outcome == .deny)
        try FileManager.default.createSymbolicLink(atPath: root + "/globex", withDestinationPath: root + "/missing")
        #expect { try PolicySnapshot.load(directory: root) } throws: { "\($0)".contains("symbolic link to nothing") }
    }

    @Test("directory layout errors: stray files, bad tenant names, empty tenants, no tenants")
    func layout() throws {
        for (files, expected) in [
            (["p.json": "{}"], "policy files live in tenant folders"),
            (["bad tenant/p.json": "{}"], "not a valid tenant id"),
            (["acme/readme.txt": "x"], "acme/readme.txt: not a policy document"),
            // Found by review: documents a tenant folder holds in a subfolder or under another spelling were skipped.
            (["acme/a.json": "{}", "acme/extra/deny.json": "{}"], "acme/extra: folders inside a tenant folder are not read"),
            (["acme/a.json": "{}", "acme/Deny.JSON": "{}"], "acme/Deny.JSON: not a policy document"),
            (["_global/p.json": "{}"], "no tenant folders"),
            (["acme/a.json": #"{"name":"same"}"#, "acme/b.json": #"{"name":"same"}"#], "also used by"),
            // One limit id in two documents of a tenant (or in a global one): both would count in the same buckets.
            (
                [
                    "acme/a.json": #"{"rate_limits":[{"id":"calls","rate_per_second":100,"burst":100}]}"#,
                    "acme/b.json": #"{"rate_limits":[{"id":"calls","rate_per_second":1,"burst":5,"tools":["dangerous"]}]}"#,
                ], "rate limit id 'calls' is also used by"
            ),
            (
                [
                    "_global/g.json": #"{"rate_limits":[{"id":"calls","rate_per_second":100,"burst":100}]}"#,
                    "acme/a.json": #"{"rate_limits":[{"id":"calls","rate_per_second":1,"burst":5}]}"#,
                ], "rate limit id 'calls' is also used by"
            ),
        ] {
            let root = try temporaryPolicies(files)
            defer { try? FileManager.default.removeItem(atPath: root) }
            #expect { try PolicySnapshot.load(directory: root) } throws: { "\($0)".contains(expected) }
        }
    }

    @Test("random JSON arguments never crash the evaluator, and evaluation is deterministic (bounded fuzz)")
    func fuzz() throws {
        let snapshot = try PolicyFixtures.shipped()
        var generator = SystemRandomNumberGenerator()
        let atoms = [
            "..", "/", "\\", "%2e", "%25", "．", "'", ";", "$(", "|", "path", "PATH", "sql", "\u{0}", "select ", " or ",
            "=", "a", "é", "\u{FF0F}", "-----BEGIN PRIVATE KEY-----", "%c0%af", "~", "C:",
        ]
        func randomString() -> String {
            (0..<Int.random(in: 0..<8, using: &generator)).map { _ in atoms.randomElement(using: &generator)! }.joined()
        }
        func randomValue(_ depth: Int) -> JSONValue {
            switch Int.random(in: 0..<(depth > 3 ? 3 : 6), using: &generator) {
            case 0: return .string(randomString())
            case 1: return .number(JSONNumber(Int64.random(in: -5...5, using: &generator)))
            case 2: return .bool(Bool.random(using: &generator))
            case 3: return .array((0..<Int.random(in: 0..<4, using: &generator)).map { _ in randomValue(depth + 1) })
            default:
                var seen = Set<String>()
                let members = (0..<Int.random(in: 0..<4, using: &generator)).compactMap { _ -> JSONObject.Member? in
                    let key = randomString()
                    guard seen.insert(key).inserted else { return nil }
                    return JSONObject.Member(key: key, value: randomValue(depth + 1))
                }
                return .object(JSONObject(members))
            }
        }
        let tools = ["read_file", "write_file", "query_db", "exec_sql", "convert_document", "x", "search_a"]
        for _ in 0..<2_000 {
            let request = PolicyRequest(
                tenant: ["acme", "globex"].randomElement(using: &generator)!, agent: "bot1", scopes: ["tools:read"],
                target: tools.randomElement(using: &generator)!, arguments: randomValue(0))
            let first = snapshot.evaluate(request)
            #expect(snapshot.evaluate(request) == first)
        }
    }
}

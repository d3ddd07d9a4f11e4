import Foundation
import MCPDemoServer
import NIOConcurrencyHelpers
import NIOCore
import Policy
import StrictJSON
import TLS
import TestSupport
import Testing

@testable import Gateway
@testable import Identity

@Suite("MCP proxy end to end (gateway on port 0, in-process upstreams)", .serialized)
struct ProxyTests {
    func withGateway(
        _ behaviour: RecordingUpstream.Behaviour = .json, limits: GatewayLimits = GatewayLimits(), frozenClock: Bool = false,
        _ body: (GatewayFixture, RecordingUpstream) async throws -> Void
    ) async throws {
        let upstream = try await RecordingUpstream.start(behaviour)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits, frozenClock: frozenClock)
        do {
            try await body(gateway, upstream)
        } catch {
            try? await gateway.stop()
            await upstream.stop()
            throw error
        }
        try await gateway.stop()
        await upstream.stop()
    }

    func error(_ response: TestHTTPClient.Response) throws -> JSONObject {
        try #require(try JSONParser.parse(response.body).objectValue?["error"]?.objectValue, "no JSON-RPC error in \(response.body)")
    }

    @Test("allowed call: forwarded byte for byte, without the caller's credentials, with the upstream's own")
    func allowed() async throws {
        try await withGateway { gateway, upstream in
            let body =
                #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"readme.txt","n":1.50}}}"#
            let token = try GatewayFixture.token()
            let response = try await gateway.client().send(
                body: body,
                headers: [
                    ("Authorization", "Bearer \(token)"), ("Cookie", "session=stolen"), ("X-Agent-Id", "admin"),
                    ("MCP-Protocol-Version", "2025-06-18"), ("Mcp-Session-Id", gateway.sessionHandle("s-1")),
                ])
            #expect(response.status == 200)
            #expect(response.body.contains(#""result":{"ok":true}"#))
            let forwarded = try #require(upstream.received.first)
            #expect(forwarded.body == body)
            #expect(forwarded.header("authorization") == nil)
            #expect(forwarded.header("cookie") == nil)
            #expect(forwarded.header("x-agent-id") == nil)
            #expect(forwarded.header("x-upstream-key") == "upstream-secret")
            #expect(forwarded.header("mcp-protocol-version") == "2025-06-18")
            #expect(forwarded.header("mcp-session-id") == "s-1")
            #expect(forwarded.header("host")?.hasPrefix("127.0.0.1:") == true)
            let record = try #require(try gateway.auditRecords().last)
            #expect(record["decision"] == .string("allow"))
            #expect(record["auth_method"] == .string("both"))
            #expect(record["upstream_status"] == .number(JSONNumber(200)))
            #expect(record["arguments"]?.objectValue?["keys"] == .array([.string("path"), .string("n")]))
        }
    }

    @Test(
        "a JSON body's Content-Type: charset utf-8 (any case, quoted or not) is taken and forwarded as plain application/json; another charset is 415"
    )
    func jsonMediaType() async throws {
        try await withGateway { gateway, upstream in
            let body = #"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"readme.txt"}}}"#
            let token = try GatewayFixture.token()
            for type in ["application/json; charset=UTF-8", #"Application/JSON;charset="utf-8"; q=1"#, "application/json"] {
                let response = try await gateway.client().send(
                    body: body, headers: [("Authorization", "Bearer \(token)"), ("Content-Type", type)])
                #expect(response.status == 200, "\(type): \(response.status) \(response.body)")
                // Whatever parameters the client's header had, the upstream is told the charset the gateway read.
                #expect(upstream.received.last?.header("content-type") == "application/json", "\(type)")
            }
            let forwarded = upstream.received.count
            for type in [
                "application/json; charset=utf-7", #"application/json; charset="UTF-16""#, "application/json; charset=utf-8; charset=utf-7",
                "application/json; x=\"a", "application/jsonp", "text/json",
            ] {
                let response = try await gateway.client().send(
                    body: body, headers: [("Authorization", "Bearer \(token)"), ("Content-Type", type)])
                #expect(response.status == 415, "\(type): \(response.status)")
                #expect(try error(response)["code"] == .number(JSONNumber(-32600)), "\(type)")
            }
            #expect(upstream.received.count == forwarded)
            let records = try gateway.auditRecords().suffix(6)
            #expect(records.allSatisfy { $0["decision"] == .string("malformed") }, "\(records)")
            #expect(records.first?["reason"]?.stringValue?.contains("charset must be utf-8") == true, "\(records)")
        }
    }

    @Test("a tool name or resource URI past its bound is refused before any decision: it would key rate-limit buckets")
    func targetLengthBounded() async throws {
        try await withGateway { gateway, upstream in
            func call(_ method: String, _ params: String) async throws -> TestHTTPClient.Response {
                try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":3,"method":"\#(method)","params":{\#(params)}}"#)
            }
            // `write_*` is allowed and counted per agent and tool (L1): each long name would hold a bucket of its own.
            let longest = "write_" + String(repeating: "x", count: MCPMethod.maximumNameBytes - 6)
            let accepted = try await call("tools/call", #""name":"\#(longest)","arguments":{"path":"a.txt"}"#)
            #expect(accepted.status == 200 && !accepted.body.contains("error"), "\(accepted.body)")
            #expect(upstream.received.count == 1)
            for (method, params) in [
                ("tools/call", #""name":"\#(longest)é","arguments":{"path":"a.txt"}"#),
                ("tools/call", #""name":"write_\#(String(repeating: "€", count: 1_000))""#),
                ("resources/read", #""uri":"file:///workspace/\#(String(repeating: "a", count: MCPMethod.maximumURIBytes))""#),
                ("resources/subscribe", #""uri":"file:///workspace/\#(String(repeating: "a", count: MCPMethod.maximumURIBytes))""#),
            ] {
                let response = try await call(method, params)
                #expect(response.status == 400, "\(method): \(response.status)")
                #expect(try error(response)["code"] == .number(JSONNumber(-32602)), "\(method)")
                #expect(try error(response)["message"]?.stringValue?.contains("the gateway takes at most") == true, "\(method)")
            }
            #expect(upstream.received.count == 1, "a call naming an overlong target reached the upstream")
        }
    }

    @Test("a list never shows a tool whose name is past the bound a call's name has: it could not be called")
    func listsHideOverlongNames() async throws {
        let longest = "write_" + String(repeating: "x", count: MCPMethod.maximumNameBytes - 6)
        let list = #"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"\#(longest)"},{"name":"\#(longest)y"}]}}"#
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (200, "application/json", list) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(try ProtocolCompletenessTests.names(response.body, "tools") == [longest], "\(response.body.prefix(200))")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("denied call: JSON-RPC error with the request's id, rule and reason; nothing reaches the upstream")
    func denied() async throws {
        try await withGateway { gateway, upstream in
            let response = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"../../etc/passwd"}"#, id: 42))
            #expect(response.status == 200)
            let error = try error(response)
            #expect(error["code"] == .number(JSONNumber(-31001)))
            #expect(try JSONParser.parse(response.body).objectValue?["id"] == .number(JSONNumber(42)))
            #expect(["A1", "R4"].contains(error["data"]?.objectValue?["rule"]?.stringValue ?? ""))
            #expect(upstream.received.isEmpty)
            #expect(try gateway.auditRecords().last?["decision"] == .string("deny"))
        }
    }

    @Test("audited call is forwarded and recorded as audit; rate limit → 429 with Retry-After")
    func auditAndRateLimit() async throws {
        try await withGateway(frozenClock: true) { gateway, upstream in
            for index in 0..<5 {
                let response = try await gateway.client().send(body: RPC.call("write_file", #"{"path":"a.txt","content":"x"}"#, id: index))
                #expect(response.status == 200, "call \(index): \(response.body)")
            }
            let limited = try await gateway.client().send(body: RPC.call("write_file", #"{"path":"a.txt","content":"x"}"#, id: 99))
            #expect(limited.status == 429)
            #expect(limited.header("retry-after") == "1")
            #expect(try error(limited)["code"] == .number(JSONNumber(-31002)))
            #expect(upstream.received.count == 5)
            let decisions = try gateway.auditRecords().map { $0["decision"]?.stringValue ?? "" }
            #expect(decisions == ["audit", "audit", "audit", "audit", "audit", "rate_limited"])
        }
    }

    /// A fresh policies directory whose only document, acme's, is `document`.
    static func acmePolicies(_ document: String) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-policies-\(UUID())")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("acme"), withIntermediateDirectories: true)
        try document.write(to: directory.appendingPathComponent("acme/p.json"), atomically: true, encoding: .utf8)
        return directory
    }

    @Test("a limit of one call in billions of years refuses the second call with a bounded Retry-After, and the gateway lives on")
    func tinyRateRetryAfter() async throws {
        let directory = try Self.acmePolicies(
            #"{"name":"t","default_action":"allow","rules":[],"rate_limits":[{"id":"L1","rate_per_second":1e-19,"burst":1,"per":"agent","scope":"local"}]}"#
        )
        defer { try? FileManager.default.removeItem(at: directory) }
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, frozenClock: true, policies: directory.path)
        #expect(try await gateway.client().send(body: RPC.call("read_file", id: 1)).status == 200)
        let limited = try await gateway.client().send(body: RPC.call("read_file", id: 2))
        #expect(limited.status == 429)
        #expect(limited.header("retry-after") == "1000000000")
        #expect(try await gateway.client().send(.GET, path: "/healthz").status == 200)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a rate limit naming tools/list counts list requests per agent: the second gets 429; calls and other agents are not counted")
    func listRequestsRateLimited() async throws {
        let directory = try Self.acmePolicies(
            #"{"name":"t","default_action":"allow","rules":[],"rate_limits":[{"id":"LL","methods":["tools/list"],"rate_per_second":1e-9,"burst":1,"per":"agent","scope":"local"}]}"#
        )
        defer { try? FileManager.default.removeItem(at: directory) }
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, frozenClock: true, policies: directory.path)
        let list = #"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#
        #expect(try await gateway.client().send(body: list).status == 200)
        let limited = try await gateway.client().send(body: list)
        #expect(limited.status == 429, "\(limited.body)")
        #expect(limited.header("retry-after") != nil)
        #expect(try error(limited)["code"] == .number(JSONNumber(-31002)))
        #expect(try JSONParser.parse(limited.body).objectValue?["id"] == .number(JSONNumber(7)))
        // Calls are not counted by a limit on lists, and another agent has a bucket of its own.
        #expect(try await gateway.client().send(body: RPC.call("read_file", id: 8)).status == 200)
        let other = try await gateway.client(nil).send(
            body: list, headers: [("Authorization", "Bearer \(try GatewayFixture.token(agent: "bot2"))")])
        #expect(other.status == 200, "\(other.body)")
        #expect(upstream.received.count == 3)
        let refused = try gateway.auditRecords().filter { $0["decision"] == .string("rate_limited") }
        #expect(refused.count == 1)
        #expect(refused.first?["rule"] == .string("LL") && refused.first?["method"] == .string("tools/list"), "\(refused)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("arguments a rule logs in full are kept in full up to 16 KiB; larger ones as keys and digest, and the record says so")
    func fullArgumentsAreBounded() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        for (id, pad) in [(1, 100), (2, 20 * 1024)] {
            let call = RPC.call("query_db", #"{"sql":"select 1","pad":"\#(String(repeating: "x", count: pad))"}"#, id: id)
            let response = try await gateway.client(nil).send(
                body: call, headers: [("Authorization", "Bearer \(try GatewayFixture.token())")])
            #expect(response.status == 200, "\(response.body)")
        }
        let records = try gateway.auditRecords().filter { $0["target"] == .string("query_db") }
        #expect(records.count == 2)
        #expect(records.first?["arguments"]?.objectValue?["sql"] == .string("select 1"))
        let large = try #require(records.last?["arguments"]?.objectValue)
        #expect(large["sha256"] != nil && large["keys"] == .array([.string("sql"), .string("pad")]), "\(large)")
        #expect(records.last?["reason"]?.stringValue?.contains("logged as keys and SHA-256") == true)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a method /healthz does not take gets 405 and a record, like every other refusal")
    func healthzMethodRecorded() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(path: "/healthz", body: "{}")
        #expect(response.status == 405)
        #expect(try gateway.auditRecords().contains { $0["rule"] == .string("http_method") && $0["http_method"] == .string("POST") })
        #expect(MCPConnectionHandler.cut("aé€😀", toBytes: 4) == "aé")  // never inside a character
        #expect(MCPConnectionHandler.cut("abc", toBytes: 4) == "abc")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("authentication failures: 401 with a challenge, 403 when credentials disagree; each audited")
    func authentication() async throws {
        try await withGateway { gateway, upstream in
            let none = try await gateway.client(nil).send(body: RPC.call("read_file"))
            #expect(none.status == 401)
            #expect(none.header("www-authenticate")?.hasPrefix("Bearer") == true)
            let expired = try await gateway.client(nil).send(
                body: RPC.call("read_file"), headers: [("Authorization", "Bearer \(try GatewayFixture.token(lifetime: -3600))")])
            #expect(expired.status == 401)
            #expect(expired.header("www-authenticate")?.contains("invalid_token") == true)
            let garbage = try await gateway.client(nil).send(
                body: RPC.call("read_file"), headers: [("Authorization", "Bearer not.a.token")])
            #expect(garbage.status == 401)
            let basic = try await gateway.client(nil).send(body: RPC.call("read_file"), headers: [("Authorization", "Basic YTpi")])
            #expect(basic.status == 401)
            // RFC 6750 §3.1 (found by review): no error code for an unsupported scheme; two Authorization headers are
            // an invalid request.
            #expect(basic.header("www-authenticate")?.contains("error=") == false, "\(basic.header("www-authenticate") ?? "")")
            // The Bearer scheme without a token is a bad token, not another scheme.
            let empty = try await gateway.client(nil).send(body: RPC.call("read_file"), headers: [("Authorization", "Bearer ")])
            #expect(empty.status == 401 && empty.header("www-authenticate")?.contains(#"error="invalid_token""#) == true)
            let twice = try await gateway.client(nil).send(
                body: RPC.call("read_file"), headers: [("Authorization", "Bearer a.b.c"), ("Authorization", "Bearer d.e.f")])
            #expect(twice.status == 400 && twice.header("www-authenticate")?.contains(#"error="invalid_request""#) == true)
            let crossTenant = try await gateway.client("globex/agents/bot1").send(
                body: RPC.call("read_file"), headers: [("Authorization", "Bearer \(try GatewayFixture.token(tenant: "acme"))")])
            #expect(crossTenant.status == 403)
            let wrongAgent = try await gateway.client("acme/agents/bot2").send(
                body: RPC.call("read_file"), headers: [("Authorization", "Bearer \(try GatewayFixture.token(agent: "bot1"))")])
            #expect(wrongAgent.status == 403)
            // A certificate alone that names another tenant than its CA's is a refused certificate (401), not two
            // credentials that disagree (403).
            let namesGlobex = try await gateway.client("acme/agents/names-globex").send(body: RPC.call("read_file"))
            #expect(namesGlobex.status == 401)
            #expect(namesGlobex.body.contains("certificate_refused"), "\(namesGlobex.body)")
            #expect(upstream.received.isEmpty)
            let records = try gateway.auditRecords()
            #expect(records.count == 9)
            #expect(records.allSatisfy { $0["decision"] == .string("authentication_failed") })
            #expect(
                records.map { $0["rule"]?.stringValue ?? "" } == [
                    "no_credentials", "token_expired", "malformed_token", "malformed_token", "malformed_token", "malformed_token",
                    "tenant_mismatch", "agent_mismatch", "certificate_refused",
                ])
            // The refused certificate's record names no agent (its URI names globex's bot, whom a search of the log by
            // agent must not find here); the reason says what it named (found by review).
            #expect(records.last?["agent"] == nil, "\(String(describing: records.last))")
            #expect(records.last?["reason"]?.stringValue?.contains("names spiffe://") == true, "\(String(describing: records.last))")
        }
    }

    @Test("malformed bodies: 400 with -32700/-32600, 413 for oversized bodies, repeated MCP headers refused")
    func malformed() async throws {
        try await withGateway(limits: GatewayLimits(maximumBodyBytes: 4096)) { gateway, upstream in
            let cases: [(String, Int, Int)] = [
                ("{not json", 400, -32700), (#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}"#, 400, -32700),
                (#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, 400, -32600), (#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, 400, -32600),
                (#"{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","method":"ping"}"#, 400, -32600), ("[]", 400, -32600),
                (#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#, 400, -32602),
                (String(repeating: "[", count: 100) + String(repeating: "]", count: 100), 400, -32700),
                // A key with more than 30 combining marks in a row (not stream-safe; comparing it re-sorts the marks).
                (RPC.call("read_file", #"{"a\#(String(repeating: "\u{0301}\u{0316}", count: 16))":1}"#), 400, -32700),
            ]
            for (body, status, code) in cases {
                let response = try await gateway.client().send(body: body)
                #expect(response.status == status, "\(body): \(response.body)")
                #expect(try error(response)["code"] == .number(JSONNumber(Int64(code))), "\(body)")
                if body.unicodeScalars.contains("\u{0301}") { #expect(response.body.contains("combining marks"), "\(response.body)") }
            }
            let large = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"\#(String(repeating: "a", count: 5000))"}"#))
            #expect(large.status == 413)
            // A second Content-Type makes the request ambiguous.
            let twoTypes = try await gateway.client().send(
                body: RPC.call("read_file"), headers: [("Content-Type", "application/json"), ("Content-Type", "text/plain")])
            #expect(twoTypes.status == 400)
            let twoVersions = try await gateway.client().send(
                body: RPC.call("read_file"), headers: [("MCP-Protocol-Version", "2025-06-18"), ("MCP-Protocol-Version", "2025-03-26")])
            #expect(twoVersions.status == 400)
            #expect(upstream.received.isEmpty)
            #expect(try gateway.auditRecords().count == cases.count + 3)
        }
    }

    @Test("upstream down → 502, silent upstream → 504; neither leaks its address")
    func upstreamFailures() async throws {
        let gateway = try await GatewayFixture.start(upstream: "http://127.0.0.1:9/mcp")
        let down = try await gateway.client().send(body: RPC.call("read_file"))
        #expect(down.status == 502)
        #expect(!down.body.contains("127.0.0.1") && !down.body.contains(":9"))
        #expect(try gateway.auditRecords().last?["upstream_status"] == .number(JSONNumber(502)))
        try await gateway.stop()
        try await withGateway(.hang, limits: GatewayLimits(upstreamTimeout: .seconds(1))) { gateway, _ in
            let slow = try await gateway.client().send(body: RPC.call("read_file"))
            #expect(slow.status == 504)
            #expect(try error(slow)["code"] == .number(JSONNumber(-31004)))
        }
    }

    @Test("SSE is streamed: the first event reaches the client before the upstream finishes")
    func streaming() async throws {
        try await withGateway(.gatedStream) { gateway, upstream in
            let response = try await gateway.client().send(body: RPC.call("read_file", id: 5)) {
                // Only once the client holds the first event does the upstream send the rest.
                upstream.release()
            }
            #expect(response.status == 200)
            #expect(response.header("content-type") == "text/event-stream")
            #expect(response.chunks.count >= 2)
            #expect(response.chunks.first?.1.contains("notifications/progress") == true)
            #expect(response.body.contains(#""result":{"done":true}"#))
        }
    }

    @Test("a session is bound to the principal that created it")
    func sessionBinding() async throws {
        try await withGateway { gateway, upstream in
            let initialize =
                #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#
            let created = try await gateway.client().send(body: initialize)
            // The client sees a sealed handle, never the upstream's session id.
            let handle = try #require(created.header("mcp-session-id"))
            #expect(handle.hasPrefix("mcpgw1.") && !handle.contains("upstream-session-1"))
            let same = try await gateway.client().send(body: RPC.call("read_file"), headers: [("Mcp-Session-Id", handle)])
            #expect(same.status == 200)
            #expect(upstream.received.last?.header("mcp-session-id") == "upstream-session-1")
            let forwardedSoFar = upstream.received.count
            for (agent, presented) in [("acme/agents/bot2", handle), ("acme/agents/bot1", "upstream-session-1")] {
                let other = try await gateway.client(agent).send(body: RPC.call("read_file"), headers: [("Mcp-Session-Id", presented)])
                #expect(other.status == 404)
                #expect(try error(other)["code"] == .number(JSONNumber(-31006)))
            }
            #expect(upstream.received.count == forwardedSoFar)
            #expect(try gateway.auditRecords().filter { $0["rule"] == .string("session_binding") }.count == 2)
        }
    }
}

@Suite("List filtering, unit")
struct ListFilterUnitTests {
    @Test("JSON and SSE (CRLF, LF or CR) list results keep only what the caller may use; unreadable JSON is refused")
    func filtering() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let list =
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file"},{"name":"delete_file"},{"name":"exec_sql"},{"name":"write_file"}]}}"#
        let expected = ["read_file", "write_file"]
        func names(_ json: String) throws -> [String] {
            try JSONParser.parse(json).objectValue?["result"]?.objectValue?["tools"]?.arrayValue?.compactMap {
                $0.objectValue?["name"]?.stringValue
            } ?? []
        }
        let snapshot = gateway.services.policy.snapshot
        let principal = try gateway.services.authenticator.authenticate(
            certificate: nil, bearerToken: try GatewayFixture.token(), now: Date())
        let filter = ListFilter(snapshot: snapshot, principal: principal, requests: ["1": .tools])
        #expect(try names(String(decoding: try filter.filterJSON(Array(list.utf8)), as: UTF8.self)) == expected)
        // On a stream, where lists are known by their shape: one item without a name does not let the list through
        // unfiltered (that item goes too).
        let stream = ListFilter(snapshot: snapshot, principal: principal, requests: nil)
        let odd = list.replacingOccurrences(of: #"{"name":"exec_sql"}"#, with: #"{"title":"no name"}"#)
        #expect(try names(String(decoding: try stream.filterJSON(Array(odd.utf8)), as: UTF8.self)) == expected)
        #expect(!String(decoding: try stream.filterJSON(Array(odd.utf8)), as: UTF8.self).contains("no name"))
        // Unreadable answers are refused, never passed on unfiltered.
        #expect(throws: ListFilter.Unsendable.notJSON) {
            try filter.filterJSON(Array(list.replacingOccurrences(of: #""id":1"#, with: #""id":1,"id":2"#).utf8))
        }
        for ending in ["\r\n", "\n", "\r"] {
            var events = SSEEventFilter(filter: filter, maximumEventBytes: 1 << 20)
            let stream = "event: message" + ending + "data: " + list + ending + ending
            // Fed in two pieces, split inside the event: nothing comes out until the event is complete.
            let cut = stream.utf8.count / 2
            let first = try events.feed(ByteBuffer(bytes: Array(stream.utf8.prefix(cut))))
            #expect(first.isEmpty)
            let filtered = String(
                decoding: try events.feed(ByteBuffer(bytes: Array(stream.utf8.dropFirst(cut)))) + (try events.finish()), as: UTF8.self)
            let data = try #require(filtered.split(separator: "\n").first { $0.hasPrefix("data: ") })
            #expect(try names(String(data.dropFirst(6))) == expected, "line ending \(ending.debugDescription)")
        }
        // An event whose CRLF blank line ends exactly at the end of what arrived is complete: relayed at once.
        var crlf = SSEEventFilter(filter: filter, maximumEventBytes: 1 << 20)
        #expect(!(try crlf.feed(ByteBuffer(string: "event: message\r\ndata: {}\r\n\r\n"))).isEmpty)
        #expect(try crlf.feed(ByteBuffer(string: "data: {}\r\n\r")).isEmpty)  // a CR last: its LF may follow
        // An event over the bound ends the stream rather than being held or relayed unread.
        var small = SSEEventFilter(filter: filter, maximumEventBytes: 64)
        #expect(throws: SSEEventFilter.Unreadable.self) { try small.feed(ByteBuffer(string: "data: " + list)) }
        // An event of the given size or more that must be read is deferred, unread, for filtering elsewhere: what
        // precedes it is relayed, what follows it waits for the next feed. A large event that needs no reading (a
        // comment) goes on at once.
        var deferring = SSEEventFilter(filter: filter, maximumEventBytes: 1 << 20)
        let large = "data: " + list + "\n\n"
        let fed = try deferring.feed(ByteBuffer(string: "data: {}\n\n" + large + "data: []\n\n"), deferringFrom: 64)
        #expect(String(decoding: fed.events, as: UTF8.self) == "data: {}\n\n")
        #expect(fed.deferred.map { String(decoding: $0, as: UTF8.self) } == large)
        let transformed = String(decoding: try deferring.transformed(Array(large.utf8)), as: UTF8.self)
        let transformedData = try #require(transformed.split(separator: "\n").first { $0.hasPrefix("data: ") })
        #expect(try names(String(transformedData.dropFirst(6))) == expected)
        let rest = try deferring.feed(ByteBuffer(), deferringFrom: 64)
        #expect(rest.deferred == nil && String(decoding: rest.events, as: UTF8.self) == "data: []\n\n")
        var comment = SSEEventFilter(filter: filter, maximumEventBytes: 1 << 20)
        let padding = ": " + String(repeating: "x", count: 100) + "\n\n"
        #expect(try comment.feed(ByteBuffer(string: padding), deferringFrom: 64).deferred == nil)
        // Event ids are sealed; one with a NUL, which every SSE client ignores, is dropped (never sealed into an id the
        // client would present back).
        var ids = SSEEventFilter(filter: nil, maximumEventBytes: 1 << 20, sealEventID: { "sealed-" + $0 })
        let sealed = try ids.feed(ByteBuffer(string: "id: 7\ndata: a\n\nid: e\u{0}v\ndata: b\n\n"))
        #expect(String(decoding: sealed, as: UTF8.self) == "id: sealed-7\ndata: a\n\ndata: b\n\n")
        // So is any id that could not come back as `Last-Event-ID` as it came: another control character, a space or
        // tab at either end (past the one space after the colon, which is the field's), or one too long to seal into an
        // id the gateway opens. The event itself goes on.
        let unsendable = try ids.feed(
            ByteBuffer(string: "id: e\u{1}v\ndata: c\n\nid:  lead\ndata: d\n\nid: tail\t\ndata: e\n\nid: e\u{7F}\ndata: f\n\n"))
        #expect(String(decoding: unsendable, as: UTF8.self) == "data: c\n\ndata: d\n\ndata: e\n\ndata: f\n\n")
        #expect(String(decoding: try ids.feed(ByteBuffer(string: "id:x\tz\n\n")), as: UTF8.self) == "id: sealed-x\tz\n\n")
        let longID = String(repeating: "7", count: SessionHandles.maximumHandleBytes)
        #expect(String(decoding: try ids.feed(ByteBuffer(string: "id: \(longID)\ndata: g\n\n")), as: UTF8.self) == "data: g\n\n")
        // Fields are read as bytes, as clients read them: a combining mark after the colon hides neither an id (here one
        // that is not ASCII, so dropped rather than relayed unsealed) nor data (here a list that cannot be read, so the
        // stream ends rather than relay it unfiltered). Found by review. Ids that are not visible ASCII are dropped too.
        #expect(String(decoding: try ids.feed(ByteBuffer(string: "id:\u{301}up-7\ndata: h\n\n")), as: UTF8.self) == "data: h\n\n")
        #expect(String(decoding: try ids.feed(ByteBuffer(string: "id: é\ndata: i\n\n")), as: UTF8.self) == "data: i\n\n")
        #expect(
            String(
                decoding: try ids.feed(ByteBuffer(bytes: Array("id: bad".utf8) + [0xFF] + Array("utf\ndata: j\n\n".utf8))), as: UTF8.self)
                == "data: j\n\n")
        var marked = SSEEventFilter(filter: filter, maximumEventBytes: 1 << 20)
        #expect(throws: SSEEventFilter.Unreadable.self) { try marked.feed(ByteBuffer(string: "data:\u{301}" + list + "\n\n")) }
        // A field name after a character some readers take for a line break (httpx-sse before 0.4.2 split lines with
        // Python's splitlines) is refused: those readers would see an id never sealed, data never filtered. The same
        // characters elsewhere go on.
        for hidden in ["\u{2028}id: up-7", "\u{2029}data: {}", "\u{85}event: x", "\u{0B}data:{}", "\u{0C}retry: 1", "\u{1E}id"] {
            var reader = SSEEventFilter(filter: nil, maximumEventBytes: 1 << 20, sealEventID: { "sealed-" + $0 })
            #expect(throws: SSEEventFilter.Unreadable.self, "\(hidden.unicodeScalars.first!.value)") {
                try reader.feed(ByteBuffer(string: "event: message\(hidden)\ndata: a\n\n"))
            }
        }
        let prose = "data: {\"text\":\"a\u{2028}b\u{2029}\u{0C}c, \u{2028}identity and \u{2029}database, \u{85}events\"}\n\n"
        #expect(String(decoding: try ids.feed(ByteBuffer(string: prose)), as: UTF8.self) == prose)
        // An event of nothing but such an id is nothing to relay (not a lone blank line; found by the fuzzer).
        #expect(try ids.feed(ByteBuffer(string: "id: e\u{0}v\n\n")).isEmpty)
        // An event ending in a bare CR, relayed as it came, ends in CR LF: the event after the dropped one begins with an
        // LF, which a client would otherwise read as part of that CR's line end (found by the fuzzer).
        let around = try ids.feed(ByteBuffer(string: "data: a\r\rid: \u{0}\n\n\ndata: b\n\n"))
        #expect(String(decoding: around, as: UTF8.self) == "data: a\r\r\n\ndata: b\n\n")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a resource update is withheld by the policy in force when it arrives, not the one when the stream began")
    func resourceUpdatesFollowReloads() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let principal = try gateway.services.authenticator.authenticate(
            certificate: nil, bearerToken: try GatewayFixture.token(), now: Date())
        let current = NIOLockedValueBox(gateway.services.policy.snapshot)
        let filter = ListFilter(currentPolicy: { current.withLockedValue { $0 } }, principal: principal, requests: nil)
        let update = try JSONParser.parse(
            #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///workspace/a.txt"}}"#)
        #expect(!filter.withholds(update))
        // A URI longer than a client may name (2,048 bytes) is withheld unread, even under a readable prefix.
        let long = "file:///workspace/" + String(repeating: "\u{00E9}", count: 1_100)
        #expect(
            filter.withholds(
                try JSONParser.parse(#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"\#(long)"}}"#)))
        #expect(
            filter.withholds(
                .array([
                    update,
                    try JSONParser.parse(
                        #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///etc/passwd"}}"#),
                ])) == false)
        // The policy is replaced by one without this tenant (as a reload that removes its directory): withheld.
        current.withLockedValue { $0 = PolicySnapshot(tenantDocuments: [:], globalDocuments: [], directory: "") }
        #expect(filter.withholds(update))
        try await gateway.stop()
        await upstream.stop()
    }
}

@Suite("Graceful shutdown")
struct GracefulShutdownTests {
    @Test("a request in flight finishes while the gateway shuts down; new connections are refused")
    func drain() async throws {
        let upstream = try await RecordingUpstream.start(.gatedStream)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let shutdown = ShutdownProbe()
        let response = try await gateway.client().send(body: RPC.call("read_file", id: 9)) {
            // The first event is here and the upstream is still holding the rest: shut down now, then release it.
            Task {
                try await gateway.listener.shutdown(); await shutdown.finished()
            }
            // Once the listening socket is closed, a new connection must be refused.
            for _ in 0..<500 where gateway.listener.isAccepting { try? await Task.sleep(for: .milliseconds(5)) }
            let late = try? await gateway.client().send(body: RPC.call("read_file", id: 10), timeout: .seconds(2))
            await shutdown.record(lateStatus: late?.status ?? 0)
            upstream.release()
        }
        #expect(response.status == 200)
        #expect(response.body.contains(#""result":{"done":true}"#))
        #expect(await shutdown.lateStatus == 0, "a connection opened during shutdown was served")
        for _ in 0..<100 where !(await shutdown.isFinished) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(await shutdown.isFinished)
        gateway.services.audit.close()
        #expect(gateway.services.audit.writtenRecords == 1)
        await gateway.services.upstream.shutdown()
        await upstream.stop()
    }
}

actor ShutdownProbe {
    var isFinished = false
    var lateStatus = -1
    func finished() { isFinished = true }
    func record(lateStatus: Int) { self.lateStatus = lateStatus }
}

@Suite("Fail closed when the audit log cannot record")
struct AuditFailClosedTests {
    @Test("a full audit log refuses the request with 503 and nothing is forwarded")
    func fullLog() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, auditCapacityBytes: 16 * 1024)
        // Room promised to other calls fills the log (a call's own record takes a few KiB).
        let held = try gateway.services.audit.reserve(bytes: 16 * 1024 - 64)
        for body in [RPC.call("read_file", #"{"path":"a"}"#), RPC.call("delete_file")] {
            let response = try await gateway.client().send(body: body)
            #expect(response.status == 503)
            #expect(response.body.contains("-31005"))
        }
        #expect(upstream.received.isEmpty)
        gateway.services.audit.append([AuditRecord(requestID: "held", httpMethod: "POST", decision: .allow, reason: "done")], into: held)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a call whose records alone would take more than a tenant's half of the audit log is refused for good (413)")
    func callTooLargeForTheLog() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, auditCapacityBytes: 64 * 1024)
        // A 2025-03-26 batch of 40 calls: each record reserves a few KiB, together more than 32 KiB.
        let batch = "[" + (1...40).map { RPC.call("read_file", #"{"path":"a.txt"}"#, id: $0) }.joined(separator: ",") + "]"
        let response = try await gateway.client().send(body: batch, headers: [("MCP-Protocol-Version", "2025-03-26")])
        #expect(response.status == 413, "\(response.status) \(response.body)")
        #expect(response.header("retry-after") == nil)
        #expect(response.body.contains("too large for the audit log"), "\(response.body)")
        #expect(upstream.received.isEmpty)
        // A single call still goes through.
        let single = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#))
        #expect(single.status == 200, "\(single.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a batch of more messages than the limit is refused with 413 and one record; one at the limit is forwarded")
    func batchMessageLimit() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        var limits = GatewayLimits()
        limits.maximumBatchMessages = 8
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        func batch(_ count: Int) -> String {
            "[" + (1...count).map { #"{"jsonrpc":"2.0","id":\#($0),"method":"ping"}"# }.joined(separator: ",") + "]"
        }
        let version = [("MCP-Protocol-Version", "2025-03-26")]
        // Found by review: 40-byte pings in a batch each got a 300-byte record, eleven times the body in the log.
        let refused = try await gateway.client().send(body: batch(9), headers: version)
        #expect(refused.status == 413, "\(refused.status) \(refused.body)")
        #expect(refused.body.contains("at most 8 messages"), "\(refused.body)")
        #expect(upstream.received.isEmpty)
        let records = try gateway.auditRecords()
        #expect(records.count == 1 && records.first?["rule"] == .string("batch_size"), "\(records)")
        let allowed = try await gateway.client().send(body: batch(8), headers: version)
        #expect(allowed.status == 200, "\(allowed.status) \(allowed.body)")
        #expect(upstream.received.count == 1)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a full share of the audit room: callers without credentials keep their 401 and its challenge; a tenant gets 503")
    func fullShareAnswers() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        /// A gateway whose audit writer hangs in its write (a slow disk) after taking a first line: what follows stays
        /// queued, and `fill` takes most of one share.
        func gatewayWithFullShare(_ fill: (AuditLog) throws -> Void) async throws -> (GatewayFixture, SlowDiskSink) {
            let sink = SlowDiskSink()
            let gateway = try await GatewayFixture.start(upstream: upstream.url, auditCapacityBytes: 64 * 1024, auditSink: .writer(sink))
            try gateway.services.audit.append(lines: Array("{}\n".utf8))
            try await Task.sleep(for: .milliseconds(200))
            try fill(gateway.services.audit)
            return (gateway, sink)
        }
        // Found by review: the 401 became a 503 without `WWW-Authenticate`, which OAuth clients need.
        let (first, firstSink) = try await gatewayWithFullShare { audit in
            try audit.append(lines: Array(repeating: UInt8(ascii: "x"), count: 32 * 1024 - 100) + [0x0A], tenant: AuditLog.anonymousShare)
        }
        let anonymous = try await first.client(nil).send(body: RPC.call("read_file"))
        #expect(anonymous.status == 401 && anonymous.header("www-authenticate") != nil, "\(anonymous.status)")
        firstSink.released.withLock { $0 = true }
        try await first.stop()
        // A tenant's own refusal is not sent unrecorded (found by the second review): a `403` for another tenant's
        // endpoint becomes 503, and nothing is forwarded.
        var held: AuditLog.Reservation?
        let (second, secondSink) = try await gatewayWithFullShare { audit in
            held = try audit.reserve(bytes: 32 * 1024 - 100, tenant: "acme")
        }
        let denied = try await second.client().send(path: "/tenants/globex/mcp", body: RPC.call("read_file"))
        #expect(denied.status == 503 && denied.body.contains("\(GatewayErrorCode.auditUnavailable)"), "\(denied.status) \(denied.body)")
        #expect(upstream.received.isEmpty)
        secondSink.released.withLock { $0 = true }
        if let held { second.services.audit.append([], into: held) }
        try await second.stop()
        await upstream.stop()
    }

    @Test("a tenant without an upstream gets 502, and the decision is still recorded")
    func noUpstream() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, tenantsWithUpstream: ["acme"])
        let response = try await gateway.client("globex/agents/bot1").send(body: RPC.call("search_docs"))
        #expect(response.status == 502)
        let records = try gateway.auditRecords()
        #expect(records.count == 1)
        #expect(records.first?["upstream_status"] == .number(JSONNumber(502)))
        #expect(records.first?["tenant"] == .string("globex"))
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an audit file that cannot be written makes the gateway refuse, not act unrecorded")
    func brokenSink() async throws {
        // /dev/full accepts the open and fails every write with ENOSPC, like a full disk.
        let log = try AuditLog(sink: .file("/dev/full"))
        var record = AuditRecord(requestID: "r", httpMethod: "POST", decision: .allow, reason: "test")
        record.tenant = "acme"
        try log.append(record)
        log.flush()
        #expect(!log.isAccepting)
        #expect(throws: AuditUnavailable.self) { try log.append(record) }
        log.close(timeout: .milliseconds(100))
    }
}

@Suite("Sealed session handles and event ids")
struct SessionHandleTests {
    static func principal(_ tenant: String, _ agent: String) -> Principal {
        Principal(tenant: tenant, agent: agent, method: .jwt, scopes: [], expiresAt: nil, certificate: nil, token: nil)
    }

    @Test("a handle opens for its principal only, until it expires; altered or foreign-key handles never open")
    func handles() {
        let now = ManagedAtomicClock(1_000)
        let key = SealedBox.Key(id: "k1", bytes: Array(repeating: 7, count: 32))!
        let handles = SessionHandles(box: SealedBox(keys: [key]), lifetime: .seconds(60), clock: { now.value })
        let acme = Self.principal("acme", "bot1")
        let handle = handles.seal(session: "upstream-42", for: acme)
        #expect(!handle.contains("upstream-42"))
        #expect(handles.open(session: handle, for: acme) == .success("upstream-42"))
        #expect(handles.open(session: handle, for: Self.principal("acme", "bot2")) == .failure(.foreign))
        #expect(handles.open(session: handle, for: Self.principal("globex", "bot1")) == .failure(.foreign))
        var altered = Array(handle.utf8)
        altered[altered.count - 3] = altered[altered.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(handles.open(session: String(decoding: altered, as: UTF8.self), for: acme) == .failure(.unreadable))
        #expect(handles.open(session: "upstream-42", for: acme) == .failure(.unreadable))
        let other = SessionHandles(box: SealedBox(keys: [SealedBox.Key(id: "k1", bytes: Array(repeating: 8, count: 32))!]))
        #expect(other.open(session: handle, for: acme) == .failure(.unreadable))
        // Rotation: a box whose second key is the old one still opens it.
        let rotated = SessionHandles(
            box: SealedBox(keys: [SealedBox.Key(id: "k2", bytes: Array(repeating: 9, count: 32))!, key]), clock: { now.value })
        #expect(rotated.open(session: handle, for: acme) == .success("upstream-42"))
        now.value = 1_061
        #expect(handles.open(session: handle, for: acme) == .failure(.expired))
        // Event ids are bound to principal and session, and are not session handles.
        let event = handles.seal(event: "17", session: "upstream-42", for: acme)
        #expect(handles.open(event: event, session: "upstream-42", for: acme) == .success("17"))
        #expect(handles.open(event: event, session: "upstream-43", for: acme) == .failure(.otherSession))
        #expect(handles.open(event: event, session: "upstream-42", for: Self.principal("globex", "bot1")) == .failure(.foreign))
        #expect(handles.open(session: event, for: acme) == .failure(.unreadable))
        // … and expire like a session handle: a stream position without a session is not good for ever.
        let sessionless = handles.seal(event: "18", session: nil, for: acme)
        #expect(handles.open(event: sessionless, session: nil, for: acme) == .success("18"))
        now.value = 1_122
        #expect(handles.open(event: sessionless, session: nil, for: acme) == .failure(.expired))
    }

    @Test("a handle the gateway issues within its length bound always opens; the bound is where opening stops")
    func handleLengthBound() {
        let handles = SessionHandles(box: SealedBox(keys: [SealedBox.Key(id: "k1", bytes: Array(repeating: 7, count: 32))!]))
        let acme = Self.principal("acme", "bot1")
        var lastOpened = 0
        var firstRefused = 0
        for length in stride(from: 2_800, through: 3_200, by: 1) where firstRefused == 0 {
            let session = String(repeating: "s", count: length)
            let handle = handles.seal(session: session, for: acme)
            if handle.utf8.count <= SessionHandles.maximumHandleBytes {
                #expect(handles.open(session: handle, for: acme) == .success(session), "\(length)")
                lastOpened = length
            } else {
                #expect(handles.open(session: handle, for: acme) == .failure(.unreadable), "\(length)")
                firstRefused = length
            }
        }
        // The boundary lies in the range searched, so both sides were seen.
        #expect(lastOpened > 0 && firstRefused > lastOpened, "\(lastOpened) \(firstRefused)")
    }

    @Test("a task handle opens for its principal until it expires: an upstream that restarts and reuses task ids cannot revive it")
    func taskHandlesExpire() {
        let now = ManagedAtomicClock(1_000)
        let handles = SessionHandles(
            box: SealedBox(keys: [SealedBox.Key(id: "k1", bytes: Array(repeating: 7, count: 32))!]), lifetime: .seconds(60),
            clock: { now.value })
        let acme = Self.principal("acme", "bot1")
        let task = handles.seal(task: "task-1", for: acme)
        #expect(handles.open(task: task, for: acme) == .success("task-1"))
        #expect(handles.open(task: task, for: Self.principal("acme", "bot2")) == .failure(.foreign))
        now.value = 1_061
        #expect(handles.open(task: task, for: acme) == .failure(.expired))
        // Session handles, event ids, task handles and message endpoints are not interchangeable.
        #expect(handles.open(task: handles.seal(session: "task-1", for: acme), for: acme) == .failure(.unreadable))
        let endpoint = handles.seal(messagesEndpoint: "/messages/?session_id=1", for: acme)
        #expect(handles.open(messagesEndpoint: endpoint, for: acme) == .success("/messages/?session_id=1"))
        #expect(handles.open(session: endpoint, for: acme) == .failure(.unreadable))
        #expect(handles.open(messagesEndpoint: handles.seal(session: "s", for: acme), for: acme) == .failure(.unreadable))
    }
}

/// A settable clock for tests.
final class ManagedAtomicClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Int64
    init(_ value: Int64) { current = value }
    var value: Int64 {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }
}

@Suite("SSE list answers stream")
struct ListStreamTests {
    @Test("an SSE tools/list answer is relayed event by event: the first event arrives while the upstream holds the rest")
    func streamsEvents() async throws {
        let upstream = try await RecordingUpstream.start(.gatedStream)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, timeout: .seconds(10)) {
            upstream.release()
        }
        #expect(response.status == 200)
        #expect(response.chunks.count >= 2)
        #expect(response.chunks.first?.1.contains("notifications/progress") == true)
        #expect(response.body.contains(#""result":{"done":true,"cacheScope":"private"}"#))
        try await gateway.stop()
        await upstream.stop()
    }
}

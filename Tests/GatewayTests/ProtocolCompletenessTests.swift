import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON
import TLS
import TestSupport
import Testing

@testable import Gateway

/// The method table of both protocol generations, list filtering in every form an answer takes, routing headers on
/// batches, and `Mcp-Param-*` headers checked against the body (MCP 2026-07-28). Each test's upstream records what
/// reached it.
@Suite("MCP protocol completeness", .serialized)
struct ProtocolCompletenessTests {
    static let modern: [(String, String)] = [("MCP-Protocol-Version", "2026-07-28")]
    /// The `_meta` envelope every 2026-07-28 request carries.
    static let envelope =
        #""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#

    /// A 2026-07-28 tools/call of `tool` with `arguments` (JSON), and its routing headers.
    static func modernCall(_ tool: String, _ arguments: String) -> (body: String, headers: [(String, String)]) {
        (
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\#(tool)","arguments":\#(arguments),\#(envelope)}}"#,
            modern + [("Mcp-Method", "tools/call"), ("Mcp-Name", tool)]
        )
    }

    /// An upstream that answers list requests with lists that hold things acme may and may not use.
    static let lists: RecordingUpstream.Behaviour = .custom { request in
        func result(_ id: String, _ method: String) -> String {
            switch method {
            case "tools/list":
                return
                    #"{"jsonrpc":"2.0","id":\#(id),"result":{"tools":[{"name":"read_file","inputSchema":{"type":"object","properties":{"path":{"type":"string","x-mcp-header":"Path"}}}},{"name":"delete_file","inputSchema":{}},{"name":"exec_sql","inputSchema":{}}],"nextCursor":"page-2","cacheScope":"public"}}"#
            case "prompts/list":
                return #"{"jsonrpc":"2.0","id":\#(id),"result":{"prompts":[{"name":"summarize_doc"},{"name":"leak_secrets"}]}}"#
            case "resources/list":
                return
                    #"{"jsonrpc":"2.0","id":\#(id),"result":{"resources":[{"uri":"file:///workspace/a.txt","name":"a"},{"uri":"file:///etc/passwd","name":"p"}]}}"#
            case "resources/templates/list":
                return
                    #"{"jsonrpc":"2.0","id":\#(id),"result":{"resourceTemplates":[{"uriTemplate":"file:///workspace/{path}","name":"ws"},{"uriTemplate":"file:///{path}","name":"root"}]}}"#
            default:
                // A tool result that happens to carry a "tools" member: not a list, never filtered.
                return #"{"jsonrpc":"2.0","id":\#(id),"result":{"content":[],"tools":[{"name":"delete_file"}]}}"#
            }
        }
        guard request.method == "POST", let parsed = try? JSONParser.parse(request.body) else {
            // A GET stream replaying an earlier tools/list answer after Last-Event-ID.
            return ("text/event-stream", "id: 7\nevent: message\ndata: \(result("3", "tools/list"))\n\n")
        }
        let messages = parsed.arrayValue ?? [parsed]
        let answers = messages.compactMap { message -> String? in
            guard let id = message.objectValue?["id"] else { return nil }
            return result(id.serialized, message.objectValue?["method"]?.stringValue ?? "")
        }
        // The gateway forwards list requests under ids of its own: the SSE answer is asked for by a cursor.
        if request.body.contains(#""cursor":"sse""#) {
            let progress = #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#
            return (
                "text/event-stream",
                "event: message\ndata: \(progress)\n\n" + answers.map { "event: message\r\ndata: \($0)\r\n\r\n" }.joined()
            )
        }
        return ("application/json", parsed.arrayValue != nil ? "[" + answers.joined(separator: ",") + "]" : answers.first ?? "{}")
    }

    static func names(_ body: String, _ key: String, _ member: String = "name") throws -> [String] {
        let value = try JSONParser.parse(body)
        let message = value.arrayValue?.first { $0.objectValue?["result"]?.objectValue?[key] != nil } ?? value
        return message.objectValue?["result"]?.objectValue?[key]?.arrayValue?.compactMap { $0.objectValue?[member]?.stringValue } ?? []
    }

    @Test("subscriptions/listen (2026-07-28) is plumbing: forwarded, not denied by default")
    func subscriptionsListen() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let body =
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"toolsListChanged":true,\#(Self.envelope)}}"#
        let response = try await gateway.client().send(body: body, headers: Self.modern + [("Mcp-Method", "subscriptions/listen")])
        #expect(response.status == 200)
        #expect(!response.body.contains("error"), "\(response.body)")
        // Forwarded as sent, but for the trace context the gateway adds to `_meta` (its own hop, docs/operations.md).
        let traceparent = try #require(upstream.received.first?.header("traceparent"))
        #expect(
            upstream.received.map(\.body) == [
                body.replacingOccurrences(
                    of: #"clientCapabilities":{}}"#, with: #"clientCapabilities":{},"traceparent":"\#(traceparent)"}"#)
            ])
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a body whose _meta names a protocol version the MCP-Protocol-Version header does not carry is refused (-32020), unforwarded")
    func versionInBodyMustMatchHeader() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let call = Self.modernCall("read_file", #"{"path":"a.txt"}"#)
        let cancel =
            #"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,\#(Self.envelope)}}"#
        // Found in review: without the header the gateway applied 2025 rules (a notification forwarded, a session kept)
        // to a body a server reading `_meta` takes as 2026-07-28.
        for (body, headers) in [
            (call.body, [("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")]),
            (call.body, [("MCP-Protocol-Version", "2025-06-18"), ("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")]),
            (cancel, []),
        ] {
            let response = try await gateway.client().send(body: body, headers: headers)
            #expect(response.status == 400, "\(response.status) \(response.body)")
            #expect(response.body.contains("-32020"), "\(response.body)")
        }
        #expect(upstream.received.isEmpty)
        #expect(try gateway.auditRecords().filter { $0["rule"] == .string("header_mismatch") }.count == 3)
        // The same calls with the header are served.
        let served = try await gateway.client().send(body: call.body, headers: call.headers)
        #expect(served.status == 200)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a 2026-07-28 notification is acknowledged (202), recorded and not forwarded; a response is refused; an id makes no notification")
    func noClientNotificationsInModern() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        for method in ["notifications/cancelled", "notifications/progress"] {
            let body = #"{"jsonrpc":"2.0","method":"\#(method)","params":{"requestId":1,"progressToken":1,"progress":1}}"#
            let response = try await gateway.client().send(body: body, headers: Self.modern + [("Mcp-Method", method)])
            #expect(response.status == 202 && response.body.isEmpty, "\(method): \(response.status) \(response.body)")
        }
        let result = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"result":{}}"#, headers: Self.modern)
        #expect(result.status == 400 && result.body.contains("no client-to-server responses"), "\(result.body)")
        // A removed notification is still answered as a removed method.
        let roots = try await gateway.client().send(
            body: #"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
            headers: Self.modern + [("Mcp-Method", "notifications/roots/list_changed")])
        #expect(roots.status == 404 && roots.body.contains("-32601"), "\(roots.body)")
        // A "notification" with an id is a request to a server dispatching by method: refused in every version.
        for version in [Self.modern, [("MCP-Protocol-Version", "2025-11-25")]] {
            let withID = #"{"jsonrpc":"2.0","id":7,"method":"notifications/cancelled","params":{"requestId":1,\#(Self.envelope)}}"#
            let response = try await gateway.client().send(body: withID, headers: version + [("Mcp-Method", "notifications/cancelled")])
            #expect(response.status == 400 && response.body.contains("it carries no id"), "\(version): \(response.body)")
        }
        #expect(upstream.received.isEmpty, "a client notification reached a 2026-07-28 upstream")
        let records = try gateway.auditRecords()
        #expect(
            records.prefix(2).map { $0["rule"]?.stringValue } == ["protocol", "protocol"]
                && records.prefix(2).allSatisfy { $0["reason"]?.stringValue?.contains("not forwarded") == true }, "\(records)")
        try await gateway.stop()
        await upstream.stop()
    }

    /// Found by review: before 2026-07-28, a notification outside any session reached an upstream that cannot tell the
    /// tenant's agents apart, and bot2's `notifications/cancelled` cancelled bot1's call in flight. Inside a session
    /// (the upstream's own, sealed to the caller) it is forwarded as before.
    @Test("before 2026-07-28, a client notification outside a session is acknowledged and not forwarded; inside one it is")
    func sessionlessNotificationsNotForwarded() async throws {
        let upstream = try await RawUpstream.start { request in
            let body = request.contains("\"initialize\"") ? #"{"jsonrpc":"2.0","id":1,"result":{}}"# : ""
            return body.isEmpty
                ? "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
                : "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: up-1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let legacy = [("MCP-Protocol-Version", "2025-11-25")]
        for method in ["notifications/cancelled", "notifications/progress", "notifications/roots/list_changed"] {
            let body = #"{"jsonrpc":"2.0","method":"\#(method)","params":{"requestId":1,"progressToken":1,"progress":1}}"#
            let response = try await gateway.client().send(body: body, headers: legacy)
            #expect(response.status == 202 && response.body.isEmpty, "\(method): \(response.status) \(response.body)")
        }
        let batch =
            #"[{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#
        let refused = try await gateway.client().send(body: batch, headers: [("MCP-Protocol-Version", "2025-03-26")])
        #expect(refused.status == 400 && refused.body.contains("outside an MCP session"), "\(refused.body)")
        #expect(upstream.requests.withLockedValue { $0 }.isEmpty, "a session-less notification reached the upstream")
        let records = try gateway.auditRecords()
        #expect(
            records.prefix(3).allSatisfy { $0["decision"]?.stringValue == "deny" && $0["rule"]?.stringValue == "protocol" }, "\(records)")
        // `notifications/initialized` names no other call: forwarded outside a session too.
        let initialized = try await gateway.client().send(body: #"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, headers: legacy)
        #expect(initialized.status == 202)
        #expect(upstream.requests.withLockedValue { $0 }.count == 1)
        // In a session: forwarded.
        let initialize = try await gateway.client().send(
            body:
                #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
            headers: legacy)
        let session = try #require(initialize.header("mcp-session-id"))
        let cancelled = #"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#
        let inSession = try await gateway.client().send(body: cancelled, headers: legacy + [("Mcp-Session-Id", session)])
        #expect(inSession.status == 202, "\(inSession.body)")
        #expect(upstream.requests.withLockedValue { $0 }.last?.contains("notifications/cancelled") == true)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an upstream's Mcp-Session-Id on a 2026-07-28 answer is not passed on: that version has no sessions")
    func noSessionHandedOutInModern() async throws {
        let upstream = try await RawUpstream.start { _ in
            let body = #"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#
            return
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: up-1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let modern = try await gateway.client().send(
            body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{\#(Self.envelope)}}"#,
            headers: Self.modern + [("Mcp-Method", "tools/list")])
        #expect(modern.status == 200, "\(modern.body)")
        #expect(modern.header("mcp-session-id") == nil)
        let legacy = try await gateway.client().send(
            body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, headers: [("MCP-Protocol-Version", "2025-11-25")])
        #expect(legacy.header("mcp-session-id")?.hasPrefix("mcpgw1.") == true)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a method removed in 2026-07-28 gets 404 and -32601 there, and is forwarded under 2025-06-18")
    func removedMethods() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let ping = #"{"jsonrpc":"2.0","id":1,"method":"ping","params":{\#(Self.envelope)}}"#
        let refused = try await gateway.client().send(body: ping, headers: Self.modern + [("Mcp-Method", "ping")])
        #expect(refused.status == 404)
        #expect(refused.body.contains("-32601"), "\(refused.body)")
        #expect(upstream.received.isEmpty)
        // An earlier version's ping carries no 2026-07-28 envelope (one that did would be refused: header_mismatch).
        let earlierPing = #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        let legacy = try await gateway.client().send(body: earlierPing, headers: [("MCP-Protocol-Version", "2025-06-18")])
        #expect(legacy.status == 200)
        #expect(upstream.received.map(\.body) == [earlierPing])
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "every kind of list is filtered by the policy that governs its calls, marked private, cursor kept",
        arguments: [
            ("tools/list", "tools", "name", ["read_file"]), ("prompts/list", "prompts", "name", ["summarize_doc"]),
            ("resources/list", "resources", "uri", ["file:///workspace/a.txt"]),
            ("resources/templates/list", "resourceTemplates", "uriTemplate", ["file:///workspace/{path}"]),
        ])
    func listsFiltered(method: String, key: String, member: String, expected: [String]) async throws {
        let upstream = try await RecordingUpstream.start(Self.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        for id in ["5", #""sse""#] {
            let params = id.contains("sse") ? #","params":{"cursor":"sse"}"# : ""
            let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":\#(id),"method":"\#(method)"\#(params)}"#)
            #expect(response.status == 200)
            let body =
                id.contains("sse")
                ? try #require(response.body.split(separator: "\n").last { $0.hasPrefix("data: ") && $0.contains("result") }).dropFirst(6)
                    .description
                : response.body
            #expect(try Self.names(body, key, member) == expected, "\(id): \(body)")
            #expect(body.contains(#""cacheScope":"private""#), "\(body)")
            // Forwarded under an id of the gateway's own; answered under the client's.
            #expect(try JSONParser.parse(body).objectValue?["id"]?.serialized == id, "\(body)")
            #expect(upstream.received.last?.body.contains(#""id":"mcpgw1l."#) == true)
            if method == "tools/list" { #expect(body.contains(#""nextCursor":"page-2""#)) }
            if id.contains("sse") {
                // Events that carry no list go through as they came, first.
                #expect(response.body.hasPrefix("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\""))
            }
        }
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "a list answer with bytes before its JSON (a byte-order mark) under a content type that is not JSON is refused, not relayed unfiltered",
        arguments: ["\u{FEFF}", "x"])
    func listBehindLeadingBytes(prefix: String) async throws {
        let list =
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file","inputSchema":{}},{"name":"delete_file","inputSchema":{}}]}}"#
        let upstream = try await RecordingUpstream.start(.custom { _ in ("text/plain; x=application/json", prefix + list) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(response.status == 502, "\(response.status) \(response.body)")
        #expect(!response.body.contains("delete_file"))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a result holding several lists has each filtered: on a GET stream (by shape) and in the answer to a tools/list")
    func everyListInAResultFiltered() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let principal = try gateway.services.authenticator.authenticate(
            certificate: nil, bearerToken: try GatewayFixture.token(), now: Date())
        let result =
            #"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file"},{"name":"delete_file"}],"prompts":[{"name":"summarize_doc"},{"name":"leak_secrets"}],"resources":[{"uri":"file:///workspace/a.txt"},{"uri":"file:///etc/passwd"}],"resourceTemplates":[{"uriTemplate":"file:///workspace/{path}"},{"uriTemplate":"file:///{path}"}]}}"#
        for requests in [nil, ["1": ListFilter.Kind.tools]] {
            let filter = ListFilter(snapshot: gateway.services.policy.snapshot, principal: principal, requests: requests)
            let body = String(decoding: try filter.filterJSON(Array(result.utf8)), as: UTF8.self)
            #expect(try Self.names(body, "tools") == ["read_file"], "\(body)")
            #expect(try Self.names(body, "prompts") == ["summarize_doc"], "\(body)")
            #expect(try Self.names(body, "resources", "uri") == ["file:///workspace/a.txt"], "\(body)")
            #expect(try Self.names(body, "resourceTemplates", "uriTemplate") == ["file:///workspace/{path}"], "\(body)")
        }
        try await gateway.stop()
        await upstream.stop()
    }

    /// A `tools/list` result answering `request`: 300 tools (about 30 KB), every other one `delete_docs`, which globex
    /// denies, the others `search_docs`.
    static func halfDeniedList(answering request: RecordingUpstream.Request) -> String {
        let id = (try? JSONParser.parse(request.body).objectValue?["id"]?.serialized) ?? "null"
        let padding = String(repeating: "x", count: 60)
        let tools = (0..<300).map {
            #"{"name":"\#($0 % 2 == 0 ? "search_docs" : "delete_docs")","description":"\#(padding)","inputSchema":{}}"#
        }
        return #"{"jsonrpc":"2.0","id":\#(id),"result":{"tools":[\#(tools.joined(separator: ","))]}}"#
    }

    @Test("a large list answer is filtered on the decision threads, in its tenant's share of them")
    func largeListFilteredOffTheLoop() async throws {
        // 300 tools (about 30 KB): over an offload bound of 16 KiB (1 MiB by default).
        let upstream = try await RecordingUpstream.start(
            .custom { request in
                ("application/json", Self.halfDeniedList(answering: request))
            })
        var limits = GatewayLimits()
        limits.offloadListBytes = 16 * 1024
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let started = DecisionPool.shared.started.load(ordering: .relaxed)
        // As globex: other suites keep acme's share of the decision threads busy with large calls.
        let response = try await gateway.client("globex/agents/bot1").send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(response.status == 200, "\(response.body.prefix(300))")
        #expect(try Self.names(response.body, "tools") == Array(repeating: "search_docs", count: 150))
        #expect(DecisionPool.shared.started.load(ordering: .relaxed) > started)
        try await gateway.stop()
        // A tenant without a share of the decision threads gets 503 for such an answer, never an unfiltered list.
        limits.maximumLargeListsPerTenant = 0
        let refusing = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let refused = try await refusing.client("globex/agents/bot1").send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(refused.status == 503, "\(refused.body.prefix(300))")
        #expect(refused.body.contains("large list answers waiting to be filtered") && !refused.body.contains("delete_docs"))
        #expect(try refusing.auditRecords().last?["upstream_status"] == .number(JSONNumber(503)))
        try await refusing.stop()
        await upstream.stop()
    }

    @Test("a large list answer on SSE is filtered on the decision threads; the events around it keep their order")
    func largeSSEListFilteredOffTheLoop() async throws {
        // A notification, a list of 300 tools (about 30 KB: over an offload bound of 16 KiB) and three more
        // notifications, in one SSE answer of five chunks written at once (those behind the list arrive while it is
        // filtered, and wait).
        let upstream = try await RecordingUpstream.start(
            .chunks { request in
                let note = { (text: String) in
                    #"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"\#(text)"}}"#
                }
                let list = Self.halfDeniedList(answering: request)
                return (
                    "text/event-stream",
                    ["data: \(note("before"))\n\n", "data: \(list)\n\n"] + (1...3).map { "data: \(note("after \($0)"))\n\n" }
                )
            })
        var limits = GatewayLimits()
        limits.offloadListBytes = 16 * 1024
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let started = DecisionPool.shared.started.load(ordering: .relaxed)
        // As globex: other suites keep acme's share of the decision threads busy with large calls.
        let response = try await gateway.client("globex/agents/bot1").send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(response.status == 200, "\(response.body.prefix(300))")
        let data = response.body.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        #expect(data.count == 5, "\(response.body.prefix(300))")
        if data.count == 5 {
            #expect(data[0].contains("before") && data[2].contains("after 1") && data[3].contains("after 2") && data[4].contains("after 3"))
            #expect(try Self.names(data[1], "tools") == Array(repeating: "search_docs", count: 150))
        }
        #expect(DecisionPool.shared.started.load(ordering: .relaxed) > started)
        try await gateway.stop()
        // A tenant without a share of the decision threads: the stream ends there (its head is sent), recorded, and
        // the list never goes on unfiltered.
        limits.maximumLargeListsPerTenant = 0
        let refusing = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let refused = try? await refusing.client("globex/agents/bot1").send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(refused?.body.contains("delete_docs") != true)
        #expect(refused?.body.contains("after") != true)
        var rules: [String] = []
        for _ in 0..<100 where !rules.contains("large_list_budget") {
            try await Task.sleep(for: .milliseconds(20))
            rules = try refusing.auditRecords().compactMap { $0["rule"]?.stringValue }
        }
        #expect(rules.contains("large_list_budget"), "\(rules)")
        try await refusing.stop()
        await upstream.stop()
    }

    @Test(
        "a tenant whose list filtering held a loop too long has its mid-sized lists (JSON or SSE) filtered off the loops; another tenant is not affected"
    )
    func costlyListsGoOffTheLoop() async throws {
        // 300 tools (about 30 KB): under the default offload size of 1 MiB, over the costly size of 4 KiB.
        let json = try await RecordingUpstream.start(.custom { ("application/json", Self.halfDeniedList(answering: $0)) })
        let sse = try await RecordingUpstream.start(.chunks { ("text/event-stream", ["data: \(Self.halfDeniedList(answering: $0))\n\n"]) })
        var limits = GatewayLimits()
        limits.costlyDecision = .nanoseconds(1)  // every timed filtering counts as slow here
        let list = #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        let pool = DecisionPool.shared
        let queue = DecisionPool.midSizedListQueue(of: "globex")
        func filtered(_ body: String) -> Bool { body.contains("search_docs") && !body.contains("delete_docs") }
        for upstream in [json, sse] {
            let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
            // Filtered on the loop: slow (by the limit above), so globex's lists are marked (not its calls).
            let first = try await gateway.client("globex/agents/bot1").send(body: list)
            #expect(first.status == 200 && filtered(first.body), "\(first.body.prefix(300))")
            #expect(gateway.services.costlyListTenants.isCostly("globex", now: gateway.services.monotonicSeconds))
            #expect(!gateway.services.costlyTenants.isCostly("globex", now: gateway.services.monotonicSeconds))
            #expect(!gateway.services.costlyListTenants.isCostly("acme", now: gateway.services.monotonicSeconds))
            // The next one goes to the decision threads, in the tenant's queue of mid-sized lists.
            let started = pool.started(queue: queue)
            let second = try await gateway.client("globex/agents/bot1").send(body: list)
            #expect(second.status == 200 && filtered(second.body), "\(second.body.prefix(300))")
            #expect(pool.started(queue: queue) == started + 1, "the costly tenant's list was filtered on the loop again")
            try await gateway.stop()
        }
        // A marked tenant whose queue of mid-sized lists is full has them filtered on the loop, as before it was marked:
        // never a 503 or an ended stream for a list under the offload size (nor handed over only to be refused).
        limits.maximumLargeListsPerTenant = 0
        let startedBefore = pool.started(queue: queue)
        for upstream in [json, sse] {
            let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
            for _ in 0..<2 {
                let response = try await gateway.client("globex/agents/bot1").send(body: list)
                #expect(response.status == 200 && filtered(response.body), "\(response.body.prefix(300))")
            }
            #expect(gateway.services.costlyListTenants.isCostly("globex", now: gateway.services.monotonicSeconds))
            #expect(try !gateway.auditRecords().contains { $0["rule"] == .string("large_list_budget") })
            #expect(pool.started(queue: queue) == startedBefore)
            // Filtered in the feed, not deferred, refused and filtered after: the upstream's reading was never paused.
            #expect(gateway.services.upstream.statistics.readPauses.load(ordering: .relaxed) == 0)
            try await gateway.stop()
        }
        await json.stop()
        await sse.stop()
    }

    @Test("many small SSE events filtered on the loop never mark the tenant: only an event of the costly size would move")
    func smallEventsDoNotMark() async throws {
        let note = #"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#
        let upstream = try await RecordingUpstream.start(
            .chunks { _ in ("text/event-stream", [String(repeating: "data: \(note)\n\n", count: 200)]) })
        var limits = GatewayLimits()
        limits.costlyDecision = .nanoseconds(1)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        let response = try await gateway.client("globex/agents/bot1").send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(response.status == 200)
        #expect(response.body.components(separatedBy: "notifications/message").count - 1 == 200)
        #expect(!gateway.services.costlyListTenants.isCostly("globex", now: gateway.services.monotonicSeconds))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("request ids beyond ±2^53, down to Int64's least, get a clear refusal where ids are matched, never a crash")
    func extremeIDs() async throws {
        // `-9223372036854775808` once trapped (`abs(Int64.min)`) while the id was put in canonical form: one request
        // from any agent ended the process, whatever its policy (found by review).
        #expect(ExchangeDecisions.canonicalID(try JSONParser.parse("-9223372036854775808")) == nil)
        #expect(ExchangeDecisions.canonicalID(try JSONParser.parse("9223372036854775807")) == nil)
        #expect(ExchangeDecisions.canonicalID(try JSONParser.parse("-9007199254740992")) == "-9007199254740992")
        #expect(ExchangeDecisions.canonicalID(try JSONParser.parse("9007199254740993")) == nil)
        let upstream = try await RecordingUpstream.start(Self.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        for id in ["-9223372036854775808", "9223372036854775807"] {
            // A list's answer is matched to its request by id; a task method's id is kept to learn which tasks are the
            // caller's (this one names a task that is not).
            for (method, refusal) in [
                ("tools/list", #""code":-32600,"message":"invalid request: request ids must be strings or plain integers"#),
                ("tasks/get", #""code":-32602,"message":"unknown task""#),
            ] {
                let body = #"{"jsonrpc":"2.0","id":\#(id),"method":"\#(method)","params":{"taskId":"t"}}"#
                let response = try await gateway.client().send(body: body)
                #expect(response.status == 400 && response.body.contains(refusal), "\(method): \(response.body)")
            }
        }
        // Still serving.
        let list = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":-9007199254740992,"method":"tools/list"}"#)
        #expect(try Self.names(list.body, "tools") == ["read_file"], "\(list.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a batch holding tools/list is filtered by request id: the list shrinks, a call's result is untouched")
    func batchList() async throws {
        let upstream = try await RecordingUpstream.start(Self.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let batch =
            #"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#
        let response = try await gateway.client().send(body: batch, headers: [("MCP-Protocol-Version", "2025-03-26")])
        #expect(response.status == 200)
        let answers = try #require(try JSONParser.parse(response.body).arrayValue)
        let list = try #require(answers.first { $0.objectValue?["id"] == .number(JSONNumber(2)) })
        #expect(try Self.names(list.serialized, "tools") == ["read_file"])
        let call = try #require(answers.first { $0.objectValue?["id"] == .number(JSONNumber(1)) })
        #expect(try Self.names(call.serialized, "tools") == ["delete_file"], "a tool's own result was filtered")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a GET stream replaying an earlier tools/list answer (Last-Event-ID) is filtered too")
    func replayFiltered() async throws {
        let upstream = try await RecordingUpstream.start(Self.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(
            .GET,
            headers: [
                ("Accept", "text/event-stream"), ("Last-Event-ID", gateway.eventID("6", session: "s-replay")),
                ("Mcp-Session-Id", gateway.sessionHandle("s-replay")),
            ])
        #expect(response.status == 200)
        #expect(upstream.received.last?.header("Last-Event-ID") == "6")
        #expect(upstream.received.last?.header("Mcp-Session-Id") == "s-replay")
        let data = try #require(response.body.split(separator: "\n").first { $0.hasPrefix("data: ") }).dropFirst(6)
        #expect(try Self.names(String(data), "tools") == ["read_file"], "\(response.body)")
        // The event id the client sees is the gateway's, sealed to this caller and session.
        let id = try #require(response.body.split(separator: "\n").first { $0.hasPrefix("id: ") }).dropFirst(4)
        #expect(id.hasPrefix("mcpgw1e."))
        #expect(
            gateway.services.sessionHandles.open(event: String(id), session: "s-replay", for: GatewayFixture.principal()) == .success("7"))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an upstream connection back in its pool while its exchange's last event is filtered is left to its next exchange")
    func pooledConnectionLeftAlone() async throws {
        // A: a tools/list answered on SSE with one event over the offload bound (about 2 MB of list, with a stray byte
        // at its very end, so that it is read to the end before it fails as not JSON), and the end, in one write. B,
        // once that is written and A's connection is back in the pool while A's event is still being read: a call
        // answered as a stream that ends only after `release()`, on A's connection. A's stream ending (its event
        // unreadable) used to cancel that connection, B's, from under it (and writing a large filtered event, to pause
        // its reading): B never ended (found by review).
        let written = NIOLockedValueBox(false)
        let upstream = try await RecordingUpstream.start(
            .routed { request in
                guard request.body.contains("tools/list") else { return .gatedStream }
                return .chunksThen(
                    { request in
                        let id = (try? JSONParser.parse(request.body).objectValue?["id"]?.serialized) ?? "null"
                        let padding = String(repeating: "x", count: 80)
                        let tools = (0..<20_000).map { #"{"name":"search_\#($0)","description":"\#(padding)","inputSchema":{}}"# }
                        return (
                            "text/event-stream",
                            [#"data: {"jsonrpc":"2.0","id":\#(id),"result":{"tools":[\#(tools.joined(separator: ","))]}}x"# + "\n\n"]
                        )
                    }, written: { written.withLockedValue { $0 = true } })
            })
        // One event loop: A's and B's connections share its upstream pool.
        let loop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, group: loop)
        let client = gateway.client("globex/agents/bot1")
        async let listed = client.send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        // A's answer written, and its connection back in the pool (its end read) while its event is filtered.
        let idle = try #require(gateway.services.upstream.endpoint(for: "globex")).idleConnections
        for _ in 0..<1000 where !written.withLockedValue({ $0 }) || idle.value == 0 { try await Task.sleep(for: .milliseconds(5)) }
        async let called = client.send(body: RPC.call("search_docs", #"{"q":"a"}"#, id: 2), timeout: .seconds(15))
        _ = try? await listed  // A's stream ends, its connection closed
        upstream.release()
        let call = try await called
        #expect(call.status == 200 && call.body.contains("done"), "\(call.body.prefix(300))")
        // Whether this run exercised the case: B went on A's connection.
        let ports = upstream.received.map(\.peerPort)
        if ports.count == 2, ports[0] != ports[1] { print("pooledConnectionLeftAlone: B did not reuse A's connection in this run") }
        #expect(try gateway.auditRecords().contains { $0["rule"]?.stringValue == "sse_event_unreadable" })
        try await gateway.stop()
        await upstream.stop()
        try await loop.shutdownGracefully()
    }

    @Test("a request whose header cannot go on a header line is refused (502) and recorded, and nothing is sent")
    func unsendableHeaderRefused() async throws {
        // A handle sealed for an event id with a NUL, presented back as Last-Event-ID (the SSE filter no longer seals such
        // ids, which clients ignore; the handle is made directly here, as a replica of an earlier version would have).
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(
            .GET,
            headers: [
                ("Accept", "text/event-stream"), ("Last-Event-ID", gateway.eventID("e\u{0}v", session: "s-nul")),
                ("Mcp-Session-Id", gateway.sessionHandle("s-nul")),
            ])
        #expect(response.status == 502, "\(response.body)")
        #expect(response.body.contains("Last-Event-ID contains a control character"), "\(response.body)")
        #expect(upstream.received.isEmpty)
        let record = try #require(try gateway.auditRecords().last)
        #expect(record["upstream_status"] == .number(JSONNumber(502)))
        #expect(record["reason"]?.stringValue?.contains("request not sent") == true, "\(record)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("MCP routing headers on a batch are refused (400, -32020), nothing forwarded")
    func batchRoutingHeaders() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let batch =
            #"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#
        for header in [("Mcp-Method", "tools/list"), ("Mcp-Name", "read_file"), ("Mcp-Param-Path", "a")] {
            let response = try await gateway.client().send(body: batch, headers: [("MCP-Protocol-Version", "2025-03-26"), header])
            #expect(response.status == 400, "\(header)")
            #expect(response.body.contains("-32020"), "\(header): \(response.body)")
        }
        #expect(upstream.received.isEmpty)
        #expect(try gateway.auditRecords().filter { $0["rule"] == .string("header_mismatch") }.count == 3)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("Mcp-Param-* headers are forwarded, and checked against the arguments once tools/list declared them")
    func paramHeaders() async throws {
        let upstream = try await RecordingUpstream.start(Self.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let (call, routing) = Self.modernCall("read_file", #"{"path":"docs/ü.txt"}"#)
        // Before the schema is known: forwarded as sent.
        let early = try await gateway.client().send(body: call, headers: routing + [("Mcp-Param-Path", "docs/other.txt")])
        #expect(early.status == 200)
        #expect(upstream.received.last?.header("Mcp-Param-Path") == "docs/other.txt")
        _ = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#)
        let forwardedSoFar = upstream.received.count
        for wrong in [[("Mcp-Param-Path", "docs/other.txt")], [], [("Mcp-Param-Path", "=?base64?bm90IGl0?=")]] {
            let response = try await gateway.client().send(body: call, headers: routing + wrong)
            #expect(response.status == 400, "\(wrong)")
            #expect(response.body.contains("-32020"), "\(wrong): \(response.body)")
        }
        #expect(upstream.received.count == forwardedSoFar, "a mismatched call reached the upstream")
        let encoded = "=?base64?" + Data("docs/ü.txt".utf8).base64EncodedString() + "?="
        let right = try await gateway.client().send(body: call, headers: routing + [("Mcp-Param-Path", encoded)])
        #expect(right.status == 200, "\(right.body)")
        #expect(upstream.received.last?.header("Mcp-Param-Path") == encoded)
        // A client of an earlier protocol version sends no such headers and is not asked to (nor the 2026-07-28 envelope).
        let earlierCall = call.replacingOccurrences(of: "," + Self.envelope, with: "")
        #expect(earlierCall != call)
        let legacy = try await gateway.client().send(body: earlierCall, headers: [("MCP-Protocol-Version", "2025-11-25")])
        #expect(legacy.status == 200, "\(legacy.body)")
        // Sent with an earlier version (or none), such headers are not held to the body: refused, not forwarded.
        let forwarded = upstream.received.count
        for version in [[("MCP-Protocol-Version", "2025-11-25")], []] {
            let response = try await gateway.client().send(body: earlierCall, headers: version + [("Mcp-Param-Path", "../../etc/shadow")])
            #expect(response.status == 400, "\(version): \(response.body)")
            #expect(response.body.contains("only with MCP-Protocol-Version 2026-07-28"), "\(response.body)")
        }
        #expect(upstream.received.count == forwarded, "an unchecked Mcp-Param header reached the upstream")
        try await gateway.stop()
        await upstream.stop()
    }
}

/// Sessions and stream positions are the gateway's sealed handles: bound to their principal, opened by any replica
/// with the same keys, refused (404, audited) when foreign, altered or expired.
@Suite("Sealed sessions and event ids end to end", .serialized)
struct SealedSessionTests {
    @Test("a 2026-07-28 request with a session handle is refused: that generation has no sessions to scope tasks to")
    func noSessionsInModern() async throws {
        let upstream = try await RecordingUpstream.start(ProtocolCompletenessTests.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, tasksScopedToSession: true)
        let session = gateway.sessionHandle("s-1")
        let body =
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{\#(ProtocolCompletenessTests.envelope)}}"#
        let response = try await gateway.client().send(
            body: body, headers: ProtocolCompletenessTests.modern + [("Mcp-Method", "tasks/list"), ("Mcp-Session-Id", session)])
        #expect(response.status == 400, "\(response.body)")
        #expect(response.body.contains("no sessions"), "\(response.body)")
        #expect(upstream.received.isEmpty)
        // The same session under its own generation is accepted.
        let legacy = try await gateway.client().send(
            body: #"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            headers: [("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Session-Id", session)])
        #expect(legacy.status == 200, "\(legacy.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "GET and DELETE: an unknown MCP-Protocol-Version is refused; Mcp-Method, Mcp-Name and Mcp-Param-* (which mirror a POSTed message) are not forwarded"
    )
    func streamAndSessionEndCarryNoMessageHeaders() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let session = gateway.sessionHandle("s-1")
        let mirrors = [("Mcp-Method", "tools/call"), ("Mcp-Name", "delete_file"), ("Mcp-Param-Path", "/etc/passwd")]
        for method in [HTTPMethod.GET, .DELETE] {
            let unknown = try await gateway.client().send(
                method, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", session), ("MCP-Protocol-Version", "1999-01-01")])
            #expect(unknown.status == 400, "\(method): \(unknown.body)")
            _ = try await gateway.client().send(
                method,
                headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", session), ("MCP-Protocol-Version", "2025-11-25")]
                    + mirrors, timeout: .seconds(5))
        }
        let received = upstream.received
        #expect(received.map(\.method) == ["GET", "DELETE"])
        for request in received {
            let names = request.headers.map { $0.0.lowercased() }
            #expect(!names.contains("mcp-method") && !names.contains("mcp-name") && !names.contains("mcp-param-path"), "\(names)")
            #expect(names.contains("mcp-protocol-version"))
        }
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "a client's Connection options are for its hop (RFC 9110 7.6.1); naming a header the gateway reads and forwards is refused"
    )
    func clientConnectionOptionsDropped() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let hopOnly = try await gateway.client().send(
            body: RPC.call("read_file", #"{"path":"a.txt"}"#), headers: [("Connection", "keep-alive, X-Client-Hop"), ("X-Client-Hop", "1")])
        #expect(hopOnly.status == 200, "\(hopOnly.body)")
        let names = try #require(upstream.received.last).headers.map { $0.0.lowercased() }
        #expect(!names.contains("x-client-hop") && names.contains("content-type") && names.contains("accept"), "\(names)")
        // Found by review: the gateway decided under the version it read, and the upstream, without it, read another.
        for (connection, header) in [
            ("keep-alive, MCP-Protocol-Version", ("MCP-Protocol-Version", "2025-06-18")), ("Mcp-Name", ("Mcp-Name", "read_file")),
            ("mcp-param-path", ("Mcp-Param-Path", "a.txt")), ("content-type", ("X-Other", "1")),
        ] {
            let refused = try await gateway.client().send(
                body: RPC.call("read_file", #"{"path":"a.txt"}"#), headers: [("Connection", connection), header])
            #expect(refused.status == 400 && refused.body.contains("the Connection header names"), "\(connection): \(refused.body)")
        }
        #expect(upstream.received.count == 1)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("headers an upstream names in Connection are not relayed to the client; the answer carries the gateway's Date")
    func upstreamConnectionOptionsNotRelayed() async throws {
        let upstream = try await RawUpstream.start { request in
            let body = #"{"jsonrpc":"2.0","id":\#(RequestPathTests.id(in: request)),"result":{"ok":true}}"#
            return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: private\r\nConnection: Cache-Control\r\n"
                + "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        }
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#))
        #expect(response.status == 200)
        let names = response.headers.map { $0.0.lowercased() }
        #expect(!names.contains("cache-control"), "\(response.headers)")
        let dates = response.headers.filter { $0.0.lowercased() == "date" }.map(\.1)
        #expect(dates.count == 1 && dates.first?.hasSuffix(" GMT") == true && dates.first != "Sun, 06 Nov 1994 08:49:37 GMT", "\(dates)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a foreign or forged Last-Event-ID is refused and audited, and never reaches the upstream")
    func foreignLastEventID() async throws {
        let upstream = try await RecordingUpstream.start(ProtocolCompletenessTests.lists)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let session = gateway.sessionHandle("s-1")
        for (name, eventID) in [
            ("another tenant's", gateway.eventID("6", session: "s-1", tenant: "globex", agent: "bot1")),
            ("another session's", gateway.eventID("6", session: "s-2")), ("a raw upstream", "6"),
        ] {
            let response = try await gateway.client().send(
                .GET, headers: [("Accept", "text/event-stream"), ("Last-Event-ID", eventID), ("Mcp-Session-Id", session)])
            #expect(response.status == 404, "\(name)")
        }
        #expect(upstream.received.isEmpty)
        #expect(try gateway.auditRecords().filter { $0["rule"] == .string("event_binding") }.count == 3)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("the event ids of an initialize answered on SSE are sealed to the session that answer opens, so they resume on it")
    func initializeEventsBelongToTheNewSession() async throws {
        let upstream = try await RawUpstream.start { _ in
            let event =
                "id: ev-1\ndata: " + #"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}"# + "\n\n"
            return
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nMcp-Session-Id: up-7\r\nContent-Length: \(event.utf8.count)\r\n\r\n"
                + event
        }
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let initialize =
            #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#
        let response = try await gateway.client().send(body: initialize)
        #expect(response.status == 200)
        let line = try #require(response.body.split(separator: "\n").first { $0.hasPrefix("id: ") })
        let eventID = String(line.dropFirst(4))
        let principal = GatewayFixture.principal()
        #expect(gateway.services.sessionHandles.open(event: eventID, session: "up-7", for: principal) == .success("ev-1"))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "an upstream session id the client could never come back to is a 502, recorded, never a handle",
        arguments: ["3,000 bytes", "a space", "a byte that is not ASCII"])
    func unusableUpstreamSession(kind: String) async throws {
        // Too long for a handle the gateway opens (4,096 bytes), a space, a byte that is not ASCII: MCP allows visible
        // ASCII only, and a handle for any of these would be refused (or forward another id) on the client's next request.
        let session = ["3,000 bytes": String(repeating: "s", count: 3000), "a space": "up 7"][kind] ?? "up-7\u{80}"
        let upstream = try await RawUpstream.start { _ in
            let body = #"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}"#
            return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: \(session)\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
        }
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let initialize =
            #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#
        let response = try await gateway.client().send(body: initialize)
        #expect(response.status == 502, "\(response.body)")
        #expect(response.header("mcp-session-id") == nil)
        #expect(response.body.contains("upstream unavailable"), "\(response.body)")
        let record = try #require(try gateway.auditRecords().last)
        #expect(record["upstream_status"] == .number(JSONNumber(502)))
        #expect(record["reason"]?.stringValue?.contains("Mcp-Session-Id is not usable") == true, "\(record)")
        // The upstream connection closed, not returned to the pool mid-answer; and one record for the one request (none
        // came later).
        for _ in 0..<200 where upstream.closes.withLockedValue({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!upstream.closes.withLockedValue { $0.isEmpty })
        try await Task.sleep(for: .milliseconds(100))
        #expect(try gateway.auditRecords().count == 1)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("two gateway processes with the same key serve one client session alternately")
    func replicasShareSessions() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let key = SealedBox.Key(id: "shared", bytes: Array(repeating: 42, count: 32))!
        let first = try await GatewayFixture.start(upstream: upstream.url, sessionKeys: [key])
        let second = try await GatewayFixture.start(upstream: upstream.url, sessionKeys: [key])
        let initialize =
            #"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#
        let handle = try #require(try await first.client().send(body: initialize).header("mcp-session-id"))
        for (index, gateway) in [second, first, second].enumerated() {
            let response = try await gateway.client().send(
                body: RPC.call("read_file", id: 10 + index), headers: [("Mcp-Session-Id", handle)])
            #expect(response.status == 200, "call \(index)")
            #expect(upstream.received.last?.header("mcp-session-id") == "upstream-session-1")
        }
        // A gateway with another key does not know the session.
        let stranger = try await GatewayFixture.start(upstream: upstream.url)
        #expect(try await stranger.client().send(body: RPC.call("read_file"), headers: [("Mcp-Session-Id", handle)]).status == 404)
        for gateway in [first, second, stranger] { try await gateway.stop() }
        await upstream.stop()
    }
}

/// Ways an unfiltered list could reach a client, found in review; each must be filtered or refused.
@Suite("List filtering holds against odd answers", .serialized)
struct ListFilterEdgeTests {
    static let fullList =
        #"{"tools":[{"name":"read_file"},{"name":"delete_file"},{"name":"exec_sql"}]}"#

    func names(_ text: String) throws -> [String] {
        try ProtocolCompletenessTests.names(text, "tools")
    }

    @Test("a list request id that JSON readers spell differently (1.0, 1e0, 2^60) is refused")
    func ambiguousIDs() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        for id in ["1.0", "1e0", "1152921504606846976"] {
            let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/list"}"#)
            #expect(response.status == 400, "\(id)")
        }
        let batch =
            #"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#
        #expect(try await gateway.client().send(body: batch, headers: [("MCP-Protocol-Version", "2025-03-26")]).status == 400)
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "odd answers to tools/list are filtered or refused: an id the upstream respelled, a 203, a BOM, non-JSON SSE data",
        arguments: [
            (200, "application/json", #"{"jsonrpc":"2.0","id":"other","result":\#(fullList)}"#, "filtered"),
            (203, "application/json", #"{"jsonrpc":"2.0","id":1,"result":\#(fullList)}"#, "filtered"),
            (200, "text/event-stream", "\u{FEFF}data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\(fullList)}\n\n", "filtered"),
            (200, "text/event-stream", "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\(fullList),\"result\":{}}\n\n", "refused"),
        ])
    func oddAnswers(status: Int, contentType: String, body: String, expected: String) async throws {
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (status, contentType, body) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, timeout: .seconds(10))
        #expect(!response.body.contains("delete_file"), "an unfiltered list reached the client: \(response.body)")
        if expected == "filtered" {
            let json =
                contentType == "text/event-stream"
                ? String(try #require(response.body.split(separator: "\n").first { $0.hasPrefix("data: ") }).dropFirst(6)) : response.body
            #expect(try names(json) == ["read_file"], "\(json)")
        } else {
            #expect(try gateway.auditRecords().contains { $0["rule"] == .string("sse_event_unreadable") })
        }
        try await gateway.stop()
        await upstream.stop()
    }
}

/// The legacy HTTP+SSE transport (2024-11-05): `GET /sse` relays the upstream's stream with its `endpoint` event
/// pointing at the gateway's own message endpoint, sealed to the caller; `POST /messages` is decided and audited like
/// Streamable HTTP, and a refused message is answered on the caller's stream.
@Suite("Legacy HTTP+SSE transport", .serialized)
struct LegacySSETests {
    static let upstream: RecordingUpstream.Behaviour = .withStatus { request in
        if request.method == "GET" {
            let list = #"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file"},{"name":"delete_file"}]}}"#
            return (200, "text/event-stream", "event: endpoint\ndata: /messages/?session_id=abc\n\nevent: message\ndata: \(list)\n\n")
        }
        return (202, "text/plain", "Accepted")
    }

    @Test(
        "the endpoint event is the gateway's, sealed to the caller; messages are decided, audited and forwarded to the upstream's endpoint")
    func legacyTransport() async throws {
        let upstream = try await RecordingUpstream.start(Self.upstream)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, legacySSE: true)
        let stream = try await gateway.client().send(.GET, path: "/sse", headers: [("Accept", "text/event-stream")])
        #expect(stream.status == 200)
        #expect(upstream.received.first?.uri == "/sse")
        let endpoint = try #require(stream.body.split(separator: "\n").first { $0.hasPrefix("data: /messages?session=") }).dropFirst(6)
        #expect(!endpoint.contains("session_id=abc"), "the upstream's endpoint leaked: \(endpoint)")
        #expect(!stream.body.contains("delete_file"), "the list on the stream was not filtered: \(stream.body)")
        // An allowed call is forwarded to the upstream's message endpoint; a denied one is not.
        let allowed = try await gateway.client().send(path: String(endpoint), body: RPC.call("read_file", #"{"path":"a.txt"}"#))
        #expect(allowed.status == 202)
        #expect(upstream.received.last?.uri == "/messages/?session_id=abc")
        #expect(upstream.received.last?.method == "POST")
        let forwarded = upstream.received.count
        let denied = try await gateway.client().send(path: String(endpoint), body: RPC.call("delete_file", #"{"path":"a.txt"}"#))
        #expect(denied.status != 202 || denied.body.isEmpty)
        #expect(upstream.received.count == forwarded)
        // Another agent cannot post to this caller's endpoint; nor can anyone without the handle.
        let foreign = try await gateway.client("acme/agents/bot2").send(path: String(endpoint), body: RPC.call("read_file"))
        #expect(foreign.status == 404)
        let bare = try await gateway.client().send(path: "/messages", body: RPC.call("read_file"))
        #expect(bare.status == 400)
        #expect(upstream.received.count == forwarded)
        let records = try gateway.auditRecords()
        #expect(records.contains { $0["decision"] == .string("deny") && $0["target"] == .string("delete_file") })
        #expect(records.contains { $0["rule"] == .string("session_binding") && $0["agent"] == .string("bot2") })
        // The messages' records name their session: the handle the stream announced (found by review: none did).
        let handle = String(endpoint.split(separator: "session=").last ?? "")
        let messages = records.filter { $0["target"] == .string("read_file") || $0["target"] == .string("delete_file") }
        #expect(messages.count >= 2 && messages.allSatisfy { $0["session_id"] == .string(handle) }, "\(messages)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a tenant without a legacy upstream gets 502 on GET /sse; /sse takes only GET and /messages only POST")
    func legacyNotConfigured() async throws {
        let upstream = try await RecordingUpstream.start(Self.upstream)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        #expect(try await gateway.client().send(.GET, path: "/sse", headers: [("Accept", "text/event-stream")]).status == 502)
        #expect(try await gateway.client().send(path: "/sse", body: RPC.call("read_file")).status == 405)
        #expect(try await gateway.client().send(.GET, path: "/messages").status == 405)
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    /// A client that leaves mid-stream must end the exchange at once: its stream budget goes back to the agent.
    @Test("a refusal of a readable message (an unknown task) is answered on the caller's open stream, and the POST gets 202")
    func legacyRefusalOnTheStream() async throws {
        let upstream = try await Self.legacyUpstream()
        let gateway = try await GatewayFixture.start(upstream: upstream.url, legacySSE: true)
        let (stream, endpoint) = try await Self.openLegacyStream(gateway)
        let posted = try await gateway.client().send(
            path: endpoint, body: #"{"jsonrpc":"2.0","id":4,"method":"tasks/get","params":{"taskId":"task-1"}}"#)
        #expect(posted.status == 202, "\(posted.status) \(posted.body)")
        #expect(await stream.wait { $0.contains(#""id":4"#) && $0.contains("-32602") && $0.contains("unknown task") })
        // A message the gateway cannot read is answered on the POST, as the upstream answers one it cannot parse.
        let unreadable = try await gateway.client().send(path: endpoint, body: "{")
        #expect(unreadable.status == 400)
        upstream.release()
        await stream.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "refusals of every kind of a readable legacy message go on the caller's stream, the POST getting 202; a refused notification gets 202 and no answer"
    )
    func legacyBudgetRefusalsOnTheStream() async throws {
        let upstream = try await Self.legacyUpstream()
        // The stream holds the tenant's one request in flight: every message is refused by the request budget.
        var limits = GatewayLimits()
        limits.maximumRequestsPerTenant = 1
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits, legacySSE: true)
        let (stream, endpoint) = try await Self.openLegacyStream(gateway)
        // Found by review: answered `503` on the POST, which ends the SDK's legacy session for good.
        let call = try await gateway.client().send(path: endpoint, body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 7))
        #expect(call.status == 202, "\(call.status) \(call.body)")
        #expect(call.body.isEmpty)
        #expect(await stream.wait { $0.contains(#""id":7"#) && $0.contains("too many requests in flight for this tenant") })
        let notification = try await gateway.client().send(
            path: endpoint, body: #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#)
        #expect(notification.status == 202, "\(notification.status) \(notification.body)")
        // A client's response to a server's request: 202 too, and no error under the server's id on the stream.
        let response = try await gateway.client().send(path: endpoint, body: #"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#)
        #expect(response.status == 202, "\(response.status) \(response.body)")
        try await Task.sleep(for: .milliseconds(200))
        #expect(!stream.text.contains(#""id":"srv-1""#), "\(stream.text)")
        let records = try gateway.auditRecords().filter { $0["rule"] == .string("tenant_request_budget") }
        #expect(records.count == 3)
        upstream.release()
        await stream.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "a legacy refusal goes on the stream only once its records are written: with the audit log down, the stream says so, not the policy"
    )
    func legacyRefusalRecordedFirst() async throws {
        let sink = FlakySink()
        sink.failing.withLock { $0 = false }
        let upstream = try await Self.legacyUpstream()
        let gateway = try await GatewayFixture.start(upstream: upstream.url, auditSink: .writer(sink), legacySSE: true)
        let (stream, endpoint) = try await Self.openLegacyStream(gateway)
        sink.failing.withLock { $0 = true }
        // The first write fails; from then on the log refuses records.
        _ = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#))
        #expect(try await eventually(within: .seconds(5)) { !gateway.services.audit.isAccepting })
        // Found by review: the policy's refusal went onto the stream before its record was refused.
        let denied = try await gateway.client().send(path: endpoint, body: RPC.call("delete_file", #"{"path":"a.txt"}"#, id: 9))
        #expect(denied.status == 202, "\(denied.status) \(denied.body)")
        #expect(await stream.wait { $0.contains(#""id":9"#) })
        #expect(stream.text.contains("audit log unavailable"), "\(stream.text)")
        #expect(!stream.text.contains("-31001"), "\(stream.text)")
        sink.failing.withLock { $0 = false }
        upstream.release()
        await stream.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a large legacy refusal on a stream whose client stopped reading counts in the tenant's held bytes until written")
    func largeLegacyRefusalHeld() async throws {
        let upstream = try await Self.legacyUpstream()
        var limits = GatewayLimits()
        limits.maximumBodyBytes = 16 * 1024 * 1024
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits, legacySSE: true)
        let (stream, endpoint) = try await Self.openLegacyStream(gateway)
        try await stream.setReading(false)
        // A denied call under a 12 MB id: its error, echoing the id, goes onto the stream, which takes none of it.
        let id = String(repeating: "i", count: 12_000_000)
        let denied = try await gateway.client().send(
            path: endpoint,
            body: #"{"jsonrpc":"2.0","id":"\#(id)","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"a.txt"}}}"#)
        #expect(denied.status == 202, "\(denied.status)")
        // Found by review: each stream that stopped reading held one such answer, counted nowhere.
        #expect(try await eventually(within: .seconds(10)) { gateway.services.upstream.heldBytes.total >= 12_000_000 })
        try await stream.setReading(true)
        #expect(try await eventually(within: .seconds(20)) { gateway.services.upstream.heldBytes.total == 0 })
        upstream.release()
        await stream.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("an upstream that answers a legacy message in the POST's body instead of on the stream has its list filtered")
    func legacyAnswerInTheBody() async throws {
        let upstream = try await RecordingUpstream.start(
            .withStatus { request in
                if request.method == "GET" { return (200, "text/event-stream", "event: endpoint\ndata: /messages/?session_id=abc\n\n") }
                return (
                    200, "application/json",
                    #"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file"},{"name":"delete_file"}]}}"#
                )
            })
        let gateway = try await GatewayFixture.start(upstream: upstream.url, legacySSE: true)
        let stream = try await gateway.client().send(.GET, path: "/sse", headers: [("Accept", "text/event-stream")])
        let endpoint = try #require(stream.body.split(separator: "\n").first { $0.hasPrefix("data: /messages?session=") }).dropFirst(6)
        let listed = try await gateway.client().send(
            path: String(endpoint), body: #"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}"#)
        #expect(listed.body.contains("read_file"), "\(listed.body)")
        #expect(!listed.body.contains("delete_file"), "an unfiltered list in the POST's body: \(listed.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a legacy upstream's empty 202, typed application/json, goes on as a 202")
    func legacyEmptyJSONAccepted() async throws {
        let upstream = try await RecordingUpstream.start(
            .withStatus { request in
                if request.method == "GET" { return (200, "text/event-stream", "event: endpoint\ndata: /messages/?session_id=abc\n\n") }
                return (202, "application/json", "")
            })
        let gateway = try await GatewayFixture.start(upstream: upstream.url, legacySSE: true)
        let stream = try await gateway.client().send(.GET, path: "/sse", headers: [("Accept", "text/event-stream")])
        let endpoint = try #require(stream.body.split(separator: "\n").first { $0.hasPrefix("data: /messages?session=") }).dropFirst(6)
        let listed = try await gateway.client().send(
            path: String(endpoint), body: #"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}"#)
        #expect(listed.status == 202, "\(listed.status) \(listed.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("on the legacy transport, an upstream that scopes tasks to the session has its task ids sealed to the caller")
    func legacyTasksOfAScopedUpstream() async throws {
        let upstream = try await RecordingUpstream.start(
            .withStatus { request in
                let created = #"{"jsonrpc":"2.0","id":5,"result":{"task":{"taskId":"task-77","status":"working"}}}"#
                if request.method == "GET" {
                    return (
                        200, "text/event-stream", "event: endpoint\ndata: /messages/?session_id=abc\n\nevent: message\ndata: \(created)\n\n"
                    )
                }
                return (202, "text/plain", "Accepted")
            })
        let gateway = try await GatewayFixture.start(upstream: upstream.url, legacySSE: true, tasksScopedToSession: true)
        let stream = try await gateway.client().send(.GET, path: "/sse", headers: [("Accept", "text/event-stream")])
        #expect(stream.body.contains(#""taskId":"mcpgw1k."#) && !stream.body.contains("task-77"), "\(stream.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a client that leaves a legacy stream midway gives its stream back")
    func legacyStreamLeftMidway() async throws {
        let upstream = try await Self.legacyUpstream()
        var limits = GatewayLimits()
        limits.maximumStreamsPerAgent = 1
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits, legacySSE: true)
        let request = "GET /sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
        let first = try await RawTLSClient.connect(port: gateway.port)
        try await first.send(request)
        #expect(await first.wait { $0.contains("data: /messages?session=") })
        await first.close()
        // The agent's one stream is free again once the gateway has seen the client go.
        var reopened = false
        for _ in 0..<20 where !reopened {
            let next = try await RawTLSClient.connect(port: gateway.port)
            try await next.send(request)
            reopened = await next.wait(timeout: .seconds(1)) { $0.contains("data: /messages?session=") }
            await next.close()
            if !reopened { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(reopened, "the stream the client left still counts against the agent")
        upstream.release()
        try await gateway.stop()
        await upstream.stop()
    }
}

extension LegacySSETests {
    /// A legacy upstream whose stream announces its message endpoint at once and then waits for `release()`.
    static func legacyUpstream() async throws -> RecordingUpstream {
        try await RecordingUpstream.start(.gatedEvents(first: "event: endpoint\ndata: /messages/?session_id=abc\n\n", afterRelease: ""))
    }

    /// Opens `GET /sse` on a raw TLS connection to `gateway` and reads the message endpoint the gateway announces on it.
    static func openLegacyStream(_ gateway: GatewayFixture) async throws -> (stream: RawTLSClient, endpoint: String) {
        let stream = try await RawTLSClient.connect(port: gateway.port)
        try await stream.send("GET /sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        #expect(await stream.wait { $0.contains("data: /messages?session=") })
        let line = try #require(stream.text.split(separator: "\n").first { $0.hasPrefix("data: /messages?session=") })
        return (stream, String(line.dropFirst(6)).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// Every 2026-07-28 request carries its envelope in `params._meta` and mirrors itself in headers; the gateway checks
/// both before deciding, as the specification asks of intermediaries.
@Suite("2026-07-28 request envelope", .serialized)
struct ModernEnvelopeTests {
    @Test(
        "a 2026-07-28 request without its _meta envelope (-32602) or its routing headers (-32020) is refused, not forwarded",
        arguments: [
            (
                "no _meta", #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}"#, true, true,
                "-32602"
            ),
            (
                "no capabilities",
                #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
                true, true, "-32602"
            ),
            (
                "another version in _meta",
                #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
                true, true, "-32020"
            ),
            ("no Mcp-Method", ProtocolCompletenessTests.modernCall("read_file", "{}").body, false, true, "-32020"),
            ("no Mcp-Name", ProtocolCompletenessTests.modernCall("read_file", "{}").body, true, false, "-32020"),
        ])
    func envelope(name: String, body: String, method: Bool, target: Bool, code: String) async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        var headers = ProtocolCompletenessTests.modern
        if method { headers.append(("Mcp-Method", "tools/call")) }
        if target { headers.append(("Mcp-Name", "read_file")) }
        let response = try await gateway.client().send(body: body, headers: headers)
        #expect(response.status == 400, "\(name)")
        #expect(response.body.contains(code), "\(name): \(response.body)")
        #expect(upstream.received.isEmpty, "\(name) was forwarded")
        // The complete request goes through.
        let (complete, routing) = ProtocolCompletenessTests.modernCall("read_file", #"{"path":"a.txt"}"#)
        #expect(try await gateway.client().send(body: complete, headers: routing).status == 200)
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("an Mcp-Param-* header sent twice (in any case) is refused, not forwarded")
    func repeatedParamHeader() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let (call, routing) = Self.modernCall("read_file", #"{"path":"a.txt"}"#)
        let response = try await gateway.client().send(
            body: call, headers: routing + [("Mcp-Param-Path", "a.txt"), ("mcp-param-path", "../etc/passwd")])
        #expect(response.status == 400)
        #expect(response.body.contains("mcp-param-path"), "\(response.body)")
        #expect(upstream.received.isEmpty)
        #expect(MCPHeaderValue.isParamHeader("MCP-PARAM-Region") && !MCPHeaderValue.isParamHeader("Mcp-Param-"))
        try await gateway.stop()
        await upstream.stop()
    }
}

/// The end of an upstream's SSE stream, as SSE readers treat it (found by fuzzing: an unterminated last event was
/// relayed, and a rebuilt one would have been completed).
@Suite("SSE stream end")
struct SSEStreamEndTests {
    @Test("an event without its blank line at the end of the stream is dropped; one whose blank line ends in CR is relayed")
    func streamEnd() throws {
        var unterminated = SSEEventFilter(filter: nil, maximumEventBytes: 1024, sealEventID: { "sealed-" + $0 })
        #expect(try unterminated.feed(ByteBuffer(string: "data: {\"a\":1}\n\nid: 7\ndata: {}\n")) == Array("data: {\"a\":1}\n\n".utf8))
        #expect(try unterminated.finish().isEmpty, "an unfinished event must not be completed by the gateway")
        var crEnded = SSEEventFilter(filter: nil, maximumEventBytes: 1024, sealEventID: { "sealed-" + $0 })
        #expect(try crEnded.feed(ByteBuffer(string: "id: 7\rdata: {}\r\r")).isEmpty)  // a final CR may still get its LF
        #expect(String(decoding: try crEnded.finish(), as: UTF8.self) == "id: sealed-7\ndata: {}\n\n")
    }
}

extension SSEStreamEndTests {
    @Test("events the gateway reads are split into lines as bytes: a run of 60,000 combining marks is sealed and relayed as it came")
    func eventsSplitAsBytes() throws {
        // Marks of two classes, out of order: split into characters, each comparison with a line end sorted the run
        // again (an event with an id and 20,000 marks took seconds of the event loop, a 1 MiB one minutes: found by
        // review). Refusing such events instead would let any text a tool returns end the stream.
        let marks = String(repeating: "\u{0301}\u{0316}", count: 30_000)
        var sealing = SSEEventFilter(filter: nil, maximumEventBytes: 1 << 20, sealEventID: { "sealed-" + $0 })
        let relayed = try sealing.feed(ByteBuffer(string: "id: 7\r\ndata: x\(marks)\r\n\r\n"))
        #expect(relayed == Array("id: sealed-7\ndata: x\(marks)\n\n".utf8))
        var legacy = SSEEventFilter(filter: nil, maximumEventBytes: 1 << 20)
        legacy.rewriteEndpoint = { "/sealed" + $0 }
        let endpoint = try legacy.feed(ByteBuffer(string: ": x\(marks)\nevent: endpoint\ndata: /messages\n\n"))
        #expect(endpoint == Array(": x\(marks)\nevent: endpoint\ndata: /sealed/messages\n\n".utf8))
        #expect(SSEEventFilter.lines(of: "a\r\nb\rc\nd") == ["a", "", "b", "c", "d"])
        #expect(SSEEventFilter.isEndpointEvent(Array("id: 1\r\nevent:endpoint\r\n".utf8)))
        #expect(!SSEEventFilter.isEndpointEvent(Array("event:  endpoint\nevent: endpoints\nevent\n".utf8)))
    }

    @Test("a legacy endpoint event is rewritten only when its target is a plain path: a blank or control byte would split the request line")
    func endpointTargets() throws {
        let rewrite: (String) -> String = { "/messages?session=sealed(" + $0 + ")" }
        let plain = try SSEEventFilter.endpoint(Array("event: endpoint\ndata: /messages/?session_id=abc\n\n".utf8), rewrite: rewrite)
        #expect(String(decoding: plain, as: UTF8.self).contains("sealed(/messages/?session_id=abc)"))
        // The upstream's event id is not passed on (found by review).
        let withID = try SSEEventFilter.endpoint(
            Array("id: upstream-evt-42\nevent: endpoint\ndata: /messages/?session_id=abc\n\n".utf8), rewrite: rewrite)
        #expect(String(decoding: withID, as: UTF8.self) == "event: endpoint\ndata: /messages?session=sealed(/messages/?session_id=abc)\n\n")
        for target in ["/messages/?a b", "/messages/?a\tb", "/messages/?a\u{0}b", "//evil/x", "/m\u{e9}"] {
            #expect(throws: SSEEventFilter.Unreadable.self, "\(target.debugDescription)") {
                try SSEEventFilter.endpoint(Array("event: endpoint\ndata: \(target)\n\n".utf8), rewrite: rewrite)
            }
        }
    }
}

extension ProtocolCompletenessTests {
    @Test("a POST reusing a list request's id never receives that list unfiltered from an upstream that routes answers by id")
    func listIDReuse() async throws {
        // Like the official SDK under a race: an answer goes to the stream of the last POST that used its id. The
        // list is held until another POST with the same id comes, and is answered there, with everything in it.
        let heldLists = NIOLockedValueBox<Set<String>>([])
        let upstream = try await RawUpstream.start { request in
            let body = request.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            guard let message = try? JSONParser.parse(body).objectValue, let id = message["id"]?.serialized else { return nil }
            if message["method"]?.stringValue == "tools/list" {
                heldLists.withLockedValue { _ = $0.insert(id) }
                return nil
            }
            guard heldLists.withLockedValue({ $0.remove(id) }) != nil else { return RequestPathTests.json200(id) }
            let list =
                #"{"jsonrpc":"2.0","id":\#(id),"result":{"tools":[{"name":"read_file","inputSchema":{}},{"name":"delete_file","inputSchema":{}}]}}"#
            return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(list.utf8.count)\r\n\r\n" + list
        }
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: GatewayLimits(upstreamTimeout: .seconds(2)))
        let listing = Task { try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#) }
        let arrived = ContinuousClock.now + .seconds(10)
        while upstream.requests.withLockedValue({ $0.isEmpty }) && ContinuousClock.now < arrived {
            try await Task.sleep(for: .milliseconds(5))
        }
        let call = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 7))
        #expect(call.status == 200)
        #expect(!call.body.contains("delete_file"), "the call's POST carried the list unfiltered: \(call.body)")
        #expect(call.body.contains(#""result":{"ok":true}"#), "\(call.body)")
        _ = try? await listing.value
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("a list request's answer comes back under the client's id on every path: an error status, and a GET stream's replay")
    func listIDGivenBack() async throws {
        // The upstream refuses the list with 400 and remembers the id it was sent under; its GET stream then replays a
        // list answer under that id (an SDK resuming a stream the client lost).
        let seen = NIOLockedValueBox<String?>(nil)
        let upstream = try await RecordingUpstream.start(
            .withStatus { request in
                if request.method == "GET" {
                    let id = seen.withLockedValue { $0 } ?? "null"
                    let list = #"{"jsonrpc":"2.0","id":\#(id),"result":{"tools":[{"name":"read_file"},{"name":"delete_file"}]}}"#
                    return (200, "text/event-stream", "id: 9\nevent: message\ndata: \(list)\n\n")
                }
                let id = (try? JSONParser.parse(request.body).objectValue?["id"]?.serialized) ?? "null"
                seen.withLockedValue { $0 = id }
                return (400, "application/json", #"{"jsonrpc":"2.0","id":\#(id),"error":{"code":-32602,"message":"bad cursor"}}"#)
            })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let refused = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":"mine","method":"tools/list","params":{"cursor":"x"}}"#)
        #expect(refused.status == 400)
        #expect(try JSONParser.parse(refused.body).objectValue?["id"] == .string("mine"), "\(refused.body)")
        #expect(seen.withLockedValue { $0 }?.hasPrefix(#""mcpgw1l."#) == true)
        let replay = try await gateway.client().send(
            .GET,
            headers: [
                ("Accept", "text/event-stream"), ("Last-Event-ID", gateway.eventID("8", session: "s1")),
                ("Mcp-Session-Id", gateway.sessionHandle("s1")),
            ])
        let data = try #require(replay.body.split(separator: "\n").first { $0.hasPrefix("data: ") }).dropFirst(6)
        #expect(try JSONParser.parse(String(data)).objectValue?["id"] == .string("mine"), "\(replay.body)")
        #expect(try Self.names(String(data), "tools") == ["read_file"])
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("resources/subscribe is allowed to whoever may read the resource, and refused, unforwarded, to anyone else")
    func subscribeDecidedAsRead() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        func subscribe(_ uri: String) async throws -> TestHTTPClient.Response {
            try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":4,"method":"resources/subscribe","params":{"uri":"\#(uri)"}}"#)
        }
        let allowed = try await subscribe("file:///workspace/a.txt")
        #expect(allowed.status == 200)
        #expect(upstream.received.count == 1)
        let refused = try await subscribe("file:///etc/passwd")
        #expect(try JSONParser.parse(refused.body).objectValue?["error"] != nil, "\(refused.body)")
        #expect(upstream.received.count == 1, "a subscription to a resource the caller may not read reached the upstream")
        // A member a lenient server reads as `uri` would subscribe it to what the policy never saw.
        let variant = try await gateway.client().send(
            body:
                #"{"jsonrpc":"2.0","id":5,"method":"resources/subscribe","params":{"uri":"file:///workspace/a.txt","URI":"file:///etc/passwd"}}"#
        )
        #expect(variant.status == 400, "\(variant.body)")
        #expect(variant.body.contains("-32602") && variant.body.contains("reads as"), "\(variant.body)")
        #expect(upstream.received.count == 1, "a subscription with a uri variant reached the upstream")
        let records = try gateway.auditRecords().filter { $0["method"] == .string("resources/subscribe") }
        #expect(records.map { $0["decision"]?.stringValue } == ["allow", "deny"])
        #expect(records.first?["rule"] == .string("A3"))
        #expect(try gateway.auditRecords().last?["reason"]?.stringValue?.contains("reads as \"uri\"") == true)
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("an error page that is not JSON-RPC, answering a POST with a list request, goes on as it came (status and body)")
    func nonJSONErrorPassesThrough() async throws {
        let page = "<html><style>body { color: red }</style><body>Service Unavailable</body></html>"
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (503, "text/html", page) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(response.status == 503)
        #expect(response.body == page)
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    /// A 2026-07-28 `subscriptions/listen` asking updates of `uris` (a JSON array), and its routing headers.
    static func listen(_ resourceSubscriptions: String) -> (body: String, headers: [(String, String)]) {
        (
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":\#(resourceSubscriptions)},\#(envelope)}}"#,
            modern + [("Mcp-Method", "subscriptions/listen")]
        )
    }

    @Test("subscriptions/listen's resource subscriptions are decided as reads: refused, unforwarded, when any URI may not be read")
    func listenResourceSubscriptionsDecidedAsReads() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let allowed = Self.listen(#"["file:///workspace/a.txt","file:///workspace/b.txt"]"#)
        let accepted = try await gateway.client().send(body: allowed.body, headers: allowed.headers)
        #expect(accepted.status == 200, "\(accepted.body)")
        #expect(upstream.received.count == 1)
        let denied = Self.listen(#"["file:///workspace/a.txt","file:///workspace/../../etc/passwd"]"#)
        let refused = try await gateway.client().send(body: denied.body, headers: denied.headers)
        #expect(refused.status == 200, "\(refused.body)")  // a policy refusal is a JSON-RPC error, as for any call
        #expect(try JSONParser.parse(refused.body).objectValue?["error"] != nil, "\(refused.body)")
        #expect(upstream.received.count == 1, "a subscription to a resource the caller may not read reached the upstream")
        let records = try gateway.auditRecords().filter { $0["method"] == .string("subscriptions/listen") }
        #expect(records.map { $0["decision"]?.stringValue } == ["allow", "deny"])
        #expect(records.first?["rule"] == .string("A3"))
        #expect(
            records.first?["arguments"]?.objectValue?["resourceSubscriptions"]
                == .array([.string("file:///workspace/a.txt"), .string("file:///workspace/b.txt")]), "\(records)")
        #expect(records.last?["target"] == .string("file:///workspace/../../etc/passwd"))
        // Other spellings a lenient server reads as the same field (the Python SDK takes `resource_subscriptions`),
        // in `notifications` or in `params` itself, are decided too.
        for spelling in [
            #""notifications":{"resource_subscriptions":["file:///etc/passwd"]}"#,
            #""notifications":{"Resource-Subscriptions":["file:///etc/passwd"]}"#,
            #""resourceSubscriptions":["file:///etc/passwd"]"#,
            // `notifications` itself in another spelling (Go's encoding/json reads the last `Notifications`).
            #""notifications":{},"Notifications":{"resourceSubscriptions":["file:///etc/passwd"]}"#,
        ] {
            let body = #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{\#(spelling),\#(Self.envelope)}}"#
            let response = try await gateway.client().send(body: body, headers: allowed.headers)
            #expect(response.body.contains("denied by policy"), "\(spelling): \(response.body)")
        }
        #expect(upstream.received.count == 1)
        // What the gateway cannot read it cannot decide: refused as invalid params.
        for malformed in [#""file:///workspace/a.txt""#, #"[7]"#, #"[""]"#, #"{"uri":"file:///etc/passwd"}"#] {
            let request = Self.listen(malformed)
            let response = try await gateway.client().send(body: request.body, headers: request.headers)
            #expect(response.status == 400, "\(malformed): \(response.body)")
            #expect(response.body.contains("-32602"), "\(malformed): \(response.body)")
        }
        let notObject = #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":5,\#(Self.envelope)}}"#
        let response = try await gateway.client().send(body: notObject, headers: allowed.headers)
        #expect(response.status == 400, "\(response.body)")
        #expect(upstream.received.count == 1)
        // A URI past the bound any call's target has is refused; many URIs are recorded in full only up to 16 KiB.
        let overlong = Self.listen(#"["file:///workspace/\#(String(repeating: "a", count: MCPMethod.maximumURIBytes))"]"#)
        let refusedLong = try await gateway.client().send(body: overlong.body, headers: overlong.headers)
        #expect(refusedLong.status == 400 && refusedLong.body.contains("the gateway takes at most"), "\(refusedLong.body)")
        let many = (0..<40).map { #""file:///workspace/\#($0)-\#(String(repeating: "b", count: 1000))""# }.joined(separator: ",")
        let large = Self.listen("[\(many)]")
        let acceptedMany = try await gateway.client().send(body: large.body, headers: large.headers)
        #expect(acceptedMany.status == 200, "\(acceptedMany.body)")
        let manyRecord = try #require(try gateway.auditRecords().last)
        #expect(manyRecord["arguments"]?.objectValue?["sha256"] != nil, "\(manyRecord)")
        #expect(try JSONValue.object(manyRecord).serialized.utf8.count < 8 * 1024)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("notifications/resources/updated reaches only callers who may read the resource, on a listen stream and a GET stream")
    func resourceUpdatesWithheld() async throws {
        func updated(_ uri: String) -> String {
            #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":1},"uri":"\#(uri)"}}"#
        }
        let ack =
            #"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":1}}}"#
        let events = [
            ack, updated("file:///workspace/a.txt"), updated("file:///etc/shadow"),
            "[" + updated("file:///etc/passwd") + "," + updated("file:///workspace/c.txt") + "]",
            "[" + updated("file:///etc/passwd") + "]",
            #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{}}"#,
        ]
        let stream = events.enumerated().map { "id: \($0.offset)\nevent: message\ndata: \($0.element)\n\n" }.joined()
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (200, "text/event-stream", stream) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let listen = Self.listen(#"["file:///workspace/a.txt"]"#)
        let posted = try await gateway.client().send(body: listen.body, headers: listen.headers)
        let get = try await gateway.client().send(
            .GET, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", gateway.sessionHandle("s1"))])
        for response in [posted, get] {
            #expect(response.status == 200, "\(response.body)")
            let data = response.body.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
            #expect(data.count == 3, "\(response.body)")
            #expect(data.first == ack)
            #expect(data.dropFirst().allSatisfy { $0.contains("file:///workspace/") }, "\(data)")
            #expect(!response.body.contains("/etc/"), "\(response.body)")
            #expect(data.last.map { try! JSONParser.parse($0).arrayValue?.count } == 1, "\(data)")
        }
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    /// A policy directory for acme: workspace files may be read, but not those whose URI says `secret` (an argument
    /// condition), nor, in `withoutReads`, any file at all.
    static func resourcePolicies(withoutReads: Bool = false) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-resource-policies-\(UUID())")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("acme"), withIntermediateDirectories: true)
        try writeResourcePolicy(directory, withoutReads: withoutReads)
        return directory
    }

    static func writeResourcePolicy(_ directory: URL, withoutReads: Bool) throws {
        let reads = withoutReads ? "" : #"{"id":"A3","action":"allow","methods":["resources/read"],"resources":["file:///workspace/*"]},"#
        try
            #"{"name":"t","default_action":"deny","rules":[\#(reads){"id":"S1","action":"deny","methods":["resources/read"],"resources":["file:///workspace/*"],"arg_deny":{"uri":"secret"}},{"id":"T1","action":"allow","tools":["read_file"]}]}"#
            .write(to: directory.appendingPathComponent("acme/p.json"), atomically: true, encoding: .utf8)
    }

    static func updated(_ uri: String) -> String {
        #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"\#(uri)"}}"#
    }

    @Test("a resource subscription and its updates are decided as the read would be, argument conditions included")
    func resourceSubscriptionsHonourArgumentConditions() async throws {
        let directory = try Self.resourcePolicies()
        defer { try? FileManager.default.removeItem(at: directory) }
        let stream = [Self.updated("file:///workspace/secret/plan.txt"), Self.updated("file:///workspace/a.txt")].map {
            "event: message\ndata: \($0)\n\n"
        }.joined()
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (200, "text/event-stream", stream) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url, policies: directory.path)
        let read = try await gateway.client().send(
            body: #"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///workspace/secret/plan.txt"}}"#)
        #expect(read.body.contains("S1"), "\(read.body)")
        let listen = Self.listen(#"["file:///workspace/secret/plan.txt"]"#)
        let refused = try await gateway.client().send(body: listen.body, headers: listen.headers)
        #expect(refused.body.contains("S1"), "\(refused.body)")
        #expect(upstream.received.isEmpty)
        let get = try await gateway.client().send(
            .GET, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", gateway.sessionHandle("s1"))])
        #expect(!get.body.contains("secret"), "\(get.body)")
        #expect(get.body.contains("file:///workspace/a.txt"), "\(get.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("resource updates in the SSE answer of an ordinary call are withheld too, however the method name is escaped")
    func resourceUpdatesWithheldOnCallStreams() async throws {
        let escaped = #"{"jsonrpc":"2.0","method":"notifications\/resources\/upd\u0061ted","params":{"uri":"file:///etc/passwd"}}"#
        let progress = #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#
        let events = [
            Self.updated("file:///etc/passwd"), escaped, Self.updated("file:///workspace/a.txt"), "not json at all",
            "[" + Self.updated("file:///etc/batch") + "," + progress + "]",
            #"{"jsonrpc":"2.0","method":"x","method":"notifications/resources/updated","params":{"uri":"file:///etc/dup"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"updated"}]}}"#,
        ]
        let stream = events.map { "event: message\ndata: \($0)\n\n" }.joined()
        let upstream = try await RecordingUpstream.start(
            .withStatus { request in
                request.body.contains("status")
                    ? (500, "application/json", Self.updated("file:///etc/passwd")) : (200, "text/event-stream", stream)
            })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let call = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 1))
        #expect(call.status == 200)
        #expect(!call.body.contains("/etc/"), "\(call.body)")
        #expect(call.body.contains("notifications/progress"), "the rest of the batch goes on: \(call.body)")
        #expect(call.body.contains("file:///workspace/a.txt") && call.body.contains("not json at all"), "\(call.body)")
        #expect(call.body.contains(#""text":"updated""#), "\(call.body)")
        // A JSON answer (an error status here) holding nothing but such an update is refused, not passed on.
        let list = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"status"}}"#)
        #expect(list.status == 502, "\(list.body)")
        #expect(!list.body.contains("/etc/passwd"), "\(list.body)")
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "an update in a call's SSE answer is never passed unread: nested too deep to read, it ends the stream; with NaN, it is read leniently and withheld",
        arguments: [
            #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"deep":"# + String(repeating: "[", count: 70)
                + String(repeating: "]", count: 70) + #","uri":"file:///etc/passwd"}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"n":NaN,"uri":"file:///etc/passwd"}}"#,
        ])
    func unreadableUpdateEndsTheStream(update: String) async throws {
        let progress = #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#
        let stream = [progress, update].map { "event: message\ndata: \($0)\n\n" }.joined()
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (200, "text/event-stream", stream) })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let call = try? await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 1))
        #expect(call?.body.contains("/etc/passwd") != true, "\(call?.body ?? "")")
        if update.contains("[[[") {
            // Too deep to read: the stream ends (NaN is read leniently, and the update withheld).
            let records = try gateway.auditRecords()
            #expect(records.contains { $0["rule"] == .string("sse_event_unreadable") }, "\(records)")
        }
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a tool's own result that says \"Task\" but cannot be read (nested too deep) goes on as it came")
    func unreadableResultThatIsNoUpdatePasses() async throws {
        let result =
            #"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Task list"}],"structuredContent":{"deep":"#
            + String(repeating: "[", count: 70) + String(repeating: "]", count: 70) + "}}}"
        let upstream = try await RecordingUpstream.start(
            .withStatus { _ in (200, "text/event-stream", "id: upstream-7\nevent: message\ndata: \(result)\n\n") })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let call = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#, id: 1))
        #expect(call.body.contains("Task list") && call.body.contains(String(repeating: "[", count: 70)), "\(call.body.prefix(300))")
        // Its id is still sealed (found by review: the raw upstream id went out with the unread event).
        #expect(call.body.contains("id: mcpgw1e.") && !call.body.contains("upstream-7"), "\(call.body.prefix(300))")
        #expect(try !gateway.auditRecords().contains { $0["rule"] == .string("sse_event_unreadable") })
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a stream that stays open follows a policy reload: an update allowed when it began is withheld after")
    func resourceUpdatesFollowReloadOnAStream() async throws {
        let directory = try Self.resourcePolicies()
        defer { try? FileManager.default.removeItem(at: directory) }
        let upstream = try await RecordingUpstream.start(
            .gatedEvents(
                first: "event: message\ndata: \(Self.updated("file:///workspace/a.txt"))\n\n",
                afterRelease: "event: message\ndata: \(Self.updated("file:///workspace/b.txt"))\n\n"))
        let gateway = try await GatewayFixture.start(upstream: upstream.url, policies: directory.path)
        let client = try gateway.client()
        let session = try gateway.sessionHandle("s1")
        let streaming = Task { try await client.send(.GET, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", session)]) }
        for _ in 0..<200 where upstream.received.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(200))  // the head and first event are relayed by now
        try Self.writeResourcePolicy(directory, withoutReads: true)
        _ = try gateway.services.policy.reload()
        upstream.release()
        let response = try await streaming.value
        #expect(response.body.contains("file:///workspace/a.txt"), "\(response.body)")
        #expect(!response.body.contains("file:///workspace/b.txt"), "withheld by the policy in force when it arrived: \(response.body)")
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("a list answer the gateway cannot pass on is recorded with the status the client got, and why")
    func collectedListFailureRecorded() async throws {
        let upstream = try await RecordingUpstream.start(.withStatus { _ in (200, "application/json", "{not json") })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let response = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(response.status == 502, "\(response.body)")
        let records = try gateway.auditRecords().filter { $0["method"] == .string("tools/list") }
        #expect(records.count == 1, "\(records)")
        #expect(records.first?["upstream_status"] == .number(JSONNumber(502)), "\(records)")
        #expect(records.first?["reason"]?.stringValue?.contains("the upstream answered 200") == true, "\(records)")
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("answers that would be collected but are relayed (a GET stream answered 405, a list answered 204) are recorded")
    func relayedInsteadOfCollectedRecorded() async throws {
        let upstream = try await RecordingUpstream.start(
            .withStatus { request in request.method == "GET" ? (405, "text/plain", "Method Not Allowed") : (204, "application/json", "") })
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let stream = try await gateway.client().send(
            .GET, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", gateway.sessionHandle("s1"))])
        #expect(stream.status == 405)
        let list = try await gateway.client().send(body: #"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        #expect(list.status == 204)
        let records = try gateway.auditRecords()
        #expect(records.filter { $0["upstream_status"] == .number(JSONNumber(405)) }.count == 1, "\(records)")
        #expect(records.filter { $0["upstream_status"] == .number(JSONNumber(204)) }.count == 1, "\(records)")
        // Nothing is left reserved: the audit room of both exchanges was used (and the queue drains).
        for _ in 0..<200 where gateway.services.audit.queuedBytes != 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(gateway.services.audit.queuedBytes == 0)
        try await gateway.stop()
        await upstream.stop()
    }
}

extension ProtocolCompletenessTests {
    @Test("completion/complete is allowed only for a prompt the caller may get or a resource template it may read")
    func completionFollowsItsReference() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-completion-policies-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("acme"), withIntermediateDirectories: true)
        try #"""
        {"name":"c","default_action":"deny","rules":[
         {"id":"C1","action":"allow","methods":["completion/complete"]},
         {"id":"P1","action":"allow","methods":["prompts/get"],"prompts":["summarize*"]},
         {"id":"R1","action":"allow","methods":["resources/read"],"resources":["file:///workspace/*"]}]}
        """#.write(to: directory.appendingPathComponent("acme/p.json"), atomically: true, encoding: .utf8)
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, policies: directory.path)
        func complete(_ ref: String) async throws -> TestHTTPClient.Response {
            try await gateway.client().send(
                body:
                    #"{"jsonrpc":"2.0","id":5,"method":"completion/complete","params":{"ref":\#(ref),"argument":{"name":"a","value":"x"}}}"#
            )
        }
        for allowed in [#"{"type":"ref/prompt","name":"summarize_doc"}"#, #"{"type":"ref/resource","uri":"file:///workspace/{path}"}"#] {
            let response = try await complete(allowed)
            #expect(response.status == 200 && !response.body.contains("error"), "\(allowed): \(response.body)")
        }
        #expect(upstream.received.count == 2)
        for denied in [#"{"type":"ref/prompt","name":"leak_secrets"}"#, #"{"type":"ref/resource","uri":"file:///{path}"}"#] {
            let response = try await complete(denied)
            #expect(response.body.contains("may not use it"), "\(denied): \(response.body)")
        }
        for malformed in [
            #"{"type":"ref/tool","name":"x"}"#, #"{"type":"ref/prompt"}"#, #""summarize_doc""#,
            #"{"type":"ref/prompt","name":"summarize_doc","NAME":"leak_secrets"}"#,
        ] {
            let response = try await complete(malformed)
            #expect(response.status == 400 && response.body.contains("-32602"), "\(malformed): \(response.body)")
        }
        #expect(upstream.received.count == 2, "a completion for what the caller may not use reached the upstream")
        let records = try gateway.auditRecords().filter { $0["method"] == .string("completion/complete") }
        #expect(
            records.filter { $0["rule"] == .string("completion_ref") }.map { $0["target"]?.stringValue } == [
                "leak_secrets", "file:///{path}",
            ])
        try await gateway.stop()
        await upstream.stop()
    }
}

import Policy
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// Task ids bound to the principal that created the task: the client sees sealed handles (`mcpgw1k.…`) wherever the
/// upstream hands out a task id, and a task method with a handle that is not the caller's is refused before the
/// upstream sees it. The upstream below numbers its tasks `task-1`, `task-2`, … — as guessable as ids get.
@Suite("Task handles bound to their creator", .serialized)
struct TaskHandleTests {
    /// An upstream with tasks in both generations: a task-augmented `tools/call` creates `task-1` (2025-11-25 shape,
    /// or the 2026-07-28 `resultType: "task"` shape when the call declares the tasks extension); `tasks/get` answers
    /// the task it was asked about; `tasks/list` lists two tasks; a GET stream announces a status change.
    static let tasks: RecordingUpstream.Behaviour = .custom { request in
        guard request.method == "POST", let message = try? JSONParser.parse(request.body).objectValue else {
            let status = #"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"task-1","status":"completed"}}"#
            return ("text/event-stream", "event: message\ndata: \(status)\n\n")
        }
        let id = message["id"]?.serialized ?? "null"
        let params = message["params"]?.objectValue
        let asked = params?["taskId"]?.stringValue ?? "none"
        let related = #""_meta":{"io.modelcontextprotocol/related-task":{"taskId":"\#(asked)"}}"#
        switch message["method"]?.stringValue {
        case "tools/call" where params?["task"] != nil:
            return ("application/json", #"{"jsonrpc":"2.0","id":\#(id),"result":{"task":{"taskId":"task-1","status":"working"}}}"#)
        case "tools/call" where params?["_meta"] != nil:
            return (
                "text/event-stream",
                #"data: {"jsonrpc":"2.0","id":\#(id),"result":{"resultType":"task","taskId":"task-1","status":"working"}}"# + "\n\n"
            )
        case "tasks/get":
            return ("application/json", #"{"jsonrpc":"2.0","id":\#(id),"result":{"taskId":"\#(asked)","status":"working",\#(related)}}"#)
        case "tasks/list":
            return (
                "application/json",
                #"{"jsonrpc":"2.0","id":\#(id),"result":{"tasks":[{"taskId":"task-1","status":"working"},{"taskId":"task-2","status":"completed"}]}}"#
            )
        default:
            return ("application/json", #"{"jsonrpc":"2.0","id":\#(id),"result":{"content":[],"taskId":"not-a-task-answer"}}"#)
        }
    }

    static func taskGet(_ handle: String, id: Int = 2) -> String {
        #"{"jsonrpc":"2.0","id":\#(id),"method":"tasks/get","params":{"taskId":"\#(handle)"}}"#
    }

    static func result(_ body: String) throws -> JSONObject {
        try #require(try JSONParser.parse(body).objectValue?["result"]?.objectValue)
    }

    @Test("a task created by acme/bot1 is followed by bot1 only: its id is sealed, and another agent's or tenant's use is refused")
    func legacyTaskBinding() async throws {
        let upstream = try await RecordingUpstream.start(Self.tasks)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let created = try await gateway.client().send(
            body:
                #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"},"task":{"ttl":60000}}}"#
        )
        #expect(created.status == 200)
        let handle = try #require(try Self.result(created.body)["task"]?.objectValue?["taskId"]?.stringValue)
        #expect(handle.hasPrefix("mcpgw1k."), "the client saw the upstream's own task id: \(handle)")

        // The creator polls with its handle: the upstream gets its own id, and the answer's ids are sealed again.
        let polled = try await gateway.client().send(body: Self.taskGet(handle))
        #expect(polled.status == 200)
        #expect(upstream.received.last?.body.contains(#""taskId":"task-1""#) == true)
        let answer = try Self.result(polled.body)
        #expect(answer["taskId"]?.stringValue?.hasPrefix("mcpgw1k.") == true)
        let related = answer["_meta"]?.objectValue?[TaskHandleRewrite.relatedTaskKey]?.objectValue?["taskId"]?.stringValue
        #expect(related?.hasPrefix("mcpgw1k.") == true)
        let forwarded = upstream.received.count

        // Another agent of acme (bearer token), another tenant, the raw upstream id, and a forged handle.
        let bot2 = try GatewayFixture.token(agent: "bot2")
        let globex = try GatewayFixture.token(tenant: "globex")
        for (who, client, headers, presented) in [
            ("acme/bot2", gateway.client(nil), [("Authorization", "Bearer \(bot2)")], handle),
            ("globex", gateway.client(nil), [("Authorization", "Bearer \(globex)")], handle),
            ("the raw id", gateway.client(), [], "task-1"),
            ("a forged handle", gateway.client(), [], "mcpgw1k.local.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ] {
            let refused = try await client.send(body: Self.taskGet(handle == presented ? handle : presented, id: 9), headers: headers)
            #expect(refused.status == 400, "\(who)")
            let error = try JSONParser.parse(refused.body).objectValue?["error"]?.objectValue
            #expect(error?["code"] == .number(JSONNumber(-32602)), "\(who)")
            #expect(error?["message"] == .string("unknown task"), "\(who): the answer must not say whose task it is")
        }
        #expect(upstream.received.count == forwarded, "a refused task method reached the upstream")
        let bindings = try gateway.auditRecords().filter { $0["rule"] == .string("task_binding") }
        #expect(bindings.count == 4)
        #expect(bindings.allSatisfy { $0["method"] == .string("tasks/get") && $0["decision"] == .string("deny") })
        // The record says which case it was: another caller's handle, or one the gateway never issued.
        #expect(bindings.contains { $0["reason"]?.stringValue == "task handle issued to another principal" })
        #expect(bindings.contains { $0["reason"]?.stringValue?.hasPrefix("task handle not a handle this gateway issued") == true })

        // The raw id where a handle belongs outside a task method: subscribing to it (whose acknowledgment and
        // notifications would come back sealed to this caller) or naming it as a request's related task.
        for body in [
            #"{"jsonrpc":"2.0","id":10,"method":"subscriptions/listen","params":{"notifications":{"taskIds":["task-1"]}}}"#,
            #"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"},"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"task-1"}}}}"#,
        ] {
            let refused = try await gateway.client().send(body: body)
            #expect(refused.status == 400, "\(body)")
        }
        #expect(upstream.received.count == forwarded, "a raw task id reached the upstream")
        let laundering = try gateway.auditRecords().filter { $0["rule"] == .string("task_binding") }.dropFirst(4)
        #expect(laundering.map { $0["method"]?.stringValue } == ["subscriptions/listen", "tools/call"])
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "2026-07-28: a resultType task answer on SSE is sealed; tasks/get's Mcp-Name is checked against the handle and forwarded as the upstream's id"
    )
    func modernTaskBinding() async throws {
        let upstream = try await RecordingUpstream.start(Self.tasks)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let envelope =
            #""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}"#
        let modern = ProtocolCompletenessTests.modern
        let created = try await gateway.client().send(
            body: #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"},\#(envelope)}}"#,
            headers: modern + [("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")])
        #expect(created.status == 200)
        let data = try #require(created.body.split(separator: "\n").first { $0.hasPrefix("data: ") }?.dropFirst(6))
        let handle = try #require(try Self.result(String(data))["taskId"]?.stringValue)
        #expect(handle.hasPrefix("mcpgw1k."))

        let get = #"{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":"\#(handle)",\#(envelope)}}"#
        let polled = try await gateway.client().send(body: get, headers: modern + [("Mcp-Method", "tasks/get"), ("Mcp-Name", handle)])
        #expect(polled.status == 200, "\(polled.body)")
        #expect(upstream.received.last?.header("mcp-name") == "task-1")
        #expect(upstream.received.last?.body.contains(#""taskId":"task-1""#) == true)
        // An Mcp-Name that is not the body's handle (the raw id, say) is a header mismatch, not forwarded.
        let before = upstream.received.count
        let mismatched = try await gateway.client().send(
            body: get, headers: modern + [("Mcp-Method", "tasks/get"), ("Mcp-Name", "task-1")])
        #expect(mismatched.status == 400)
        #expect(try JSONParser.parse(mismatched.body).objectValue?["error"]?.objectValue?["code"] == .number(JSONNumber(-32020)))
        #expect(upstream.received.count == before)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "tasks/list is refused where the upstream's list may hold other agents' tasks: outside a session, or from an upstream not known to scope tasks to the session"
    )
    func taskListNeedsASessionScopedUpstream() async throws {
        let upstream = try await RecordingUpstream.start(Self.tasks)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let list = #"{"jsonrpc":"2.0","id":3,"method":"tasks/list","params":{}}"#
        // The upstream scopes tasks to the credential the gateway presents, which every agent of acme shares: its list
        // would hold bot2's tasks too, and sealing them would hand bot1 each of them.
        let inSession = try await gateway.client().send(body: list, headers: [("Mcp-Session-Id", gateway.sessionHandle("s-1"))])
        #expect(inSession.status == 400)
        #expect(inSession.body.contains("tasks_scoped_to_session"))
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "tasks/list is refused outside a session, and inside one (of an upstream that scopes tasks to it) lists handles sealed to the caller"
    )
    func taskList() async throws {
        let upstream = try await RecordingUpstream.start(Self.tasks)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, tasksScopedToSession: true)
        let list = #"{"jsonrpc":"2.0","id":3,"method":"tasks/list","params":{}}"#
        let refused = try await gateway.client().send(body: list)
        #expect(refused.status == 400)
        #expect(upstream.received.isEmpty)
        let listed = try await gateway.client().send(body: list, headers: [("Mcp-Session-Id", gateway.sessionHandle("s-1"))])
        #expect(listed.status == 200)
        let ids = try Self.result(listed.body)["tasks"]?.arrayValue?.compactMap { $0.objectValue?["taskId"]?.stringValue } ?? []
        #expect(ids.count == 2 && ids.allSatisfy { $0.hasPrefix("mcpgw1k.") })
        // Each listed handle opens for the caller (and polls the task it names).
        let polled = try await gateway.client().send(
            body: Self.taskGet(ids[1]), headers: [("Mcp-Session-Id", gateway.sessionHandle("s-1"))])
        #expect(polled.status == 200)
        #expect(upstream.received.last?.body.contains(#""taskId":"task-2""#) == true)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test(
        "status notifications about tasks the caller did not name are withheld from a GET stream, unless the upstream scopes tasks to the session"
    )
    func unaskedStatusIsWithheld() async throws {
        let upstream = try await RecordingUpstream.start(Self.tasks)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let stream = try await gateway.client().send(
            .GET, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", gateway.sessionHandle("s-1"))])
        #expect(stream.status == 200)
        #expect(!stream.body.contains("notifications/tasks/status"), "another agent's task status reached bot1")
        #expect(!stream.body.contains("mcpgw1k."))
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("status notifications on the session's GET stream carry sealed handles; a tool's own result is left alone")
    func streamsAndPlainResults() async throws {
        let upstream = try await RecordingUpstream.start(Self.tasks)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, tasksScopedToSession: true)
        let stream = try await gateway.client().send(
            .GET, headers: [("Accept", "text/event-stream"), ("Mcp-Session-Id", gateway.sessionHandle("s-1"))])
        #expect(stream.status == 200)
        #expect(stream.body.contains("notifications/tasks/status"))
        #expect(!stream.body.contains("task-1") && stream.body.contains(#""taskId":"mcpgw1k."#))
        // A call that asked for no task is relayed as it came, whatever its result holds.
        let plain = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a"}"#))
        #expect(plain.body.contains(#""taskId":"not-a-task-answer""#))
        try await gateway.stop()
        await upstream.stop()
    }
}

@Suite("Task handle rewrite")
struct TaskHandleRewriteTests {
    @Test("every place a task id travels is sealed, and opened again on the way in")
    func placements() throws {
        let seal: (String) -> String = { "mcpgw1k.x." + $0 }
        let open: (String) -> Result<String, SessionHandles.Problem> = {
            $0.hasPrefix("mcpgw1k.x.") ? .success(String($0.dropFirst(10))) : .failure(.foreign)
        }
        let outbound = [
            #"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"a"}}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"a"}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"tasks":[{"taskId":"a"},{"taskId":"a"}]}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"a"}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"a"}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"taskIds":["a","a"]}}}"#,
            #"{"jsonrpc":"2.0","id":5,"method":"elicitation/create","params":{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"a"}}}}"#,
            #"{"jsonrpc":"2.0","id":1,"result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"a"}}}}"#,
        ]
        for text in outbound {
            let message = try #require(try JSONParser.parse(text).objectValue)
            let sealed = try #require(TaskHandleRewrite.sealed(message, seal: seal), "\(text)")
            #expect(!JSONValue.object(sealed).serialized.contains(#""a""#), "\(text) left an id unsealed")
            #expect(JSONValue.object(sealed).serialized.contains("mcpgw1k.x.a"))
        }
        let untouched =
            #"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"taskId"}],"structuredContent":{"taskId":"a"}}}"#
        let plain = try #require(try JSONParser.parse(untouched).objectValue)
        #expect(TaskHandleRewrite.sealed(plain, seal: seal) == nil)

        let inbound = [
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":"mcpgw1k.x.a"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"taskIds":["mcpgw1k.x.a"]}}}"#,
            // Every spelling a lenient server reads as the field is opened too.
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"mcpgw1k.x.a","task_id":"mcpgw1k.x.a"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"task_id":"mcpgw1k.x.a"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"task_ids":["mcpgw1k.x.a"]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"Notifications":{"taskIds":["mcpgw1k.x.a"]}}}"#,
            #"{"jsonrpc":"2.0","id":5,"result":{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"mcpgw1k.x.a"}}}}"#,
        ]
        for text in inbound {
            let message = try #require(try JSONParser.parse(text).objectValue)
            let opened = try #require(try TaskHandleRewrite.opened(message, open: open))
            #expect(!JSONValue.object(opened).serialized.contains("mcpgw1k"), "\(text)")
        }
        // The client's own task (one the server asked it to run) is named raw in a response's or notification's
        // related-task `_meta`: it passes as it is.
        for own in [
            #"{"jsonrpc":"2.0","id":5,"result":{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"client-task"}}}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"client-task"}}}}"#,
        ] {
            let message = try #require(try JSONParser.parse(own).objectValue)
            #expect(try TaskHandleRewrite.opened(message, open: open) == nil, "\(own)")
        }
        for refused in [
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"a"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/update","params":{"taskId":7}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"taskIds":["mcpgw1k.y.a"]}}}"#,
            // A raw id where the server's task is meant: forwarded, its answer's ids would be sealed to this caller.
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"taskIds":["task-1"]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"taskIds":["mcpgw1k.x.a",7]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"taskIds":"task-1"}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"task-1"}}}}"#,
            // A raw id under another spelling of the field: a lenient upstream reads it as the task asked about.
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"taskId":"mcpgw1k.x.a","task_id":"task-1"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"taskId":"mcpgw1k.x.a","TaskId":"task-1"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"task_ids":["task-1"]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"task-IDS":"task-1"}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"taskIds":["task-1"]}}"#,
            // …and under another spelling of `notifications` itself (Go's encoding/json reads `Notifications`).
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{},"Notifications":{"taskIds":["task-1"]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"NOTIFICATIONS":{"task_ids":["task-1"]}}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/related-task":{"task_id":"task-1"}}}}"#,
        ] {
            let message = try #require(try JSONParser.parse(refused).objectValue)
            #expect(throws: TaskHandleRewrite.Refused.self, "\(refused)") { try TaskHandleRewrite.opened(message, open: open) }
        }
    }

    @Test(
        "only the caller's own tasks are sealed: those its request named, the one its request created, or any where the upstream scopes tasks to its session"
    )
    func ownership() throws {
        let principal = GatewayFixture.principal()
        var filter = ListFilter(
            snapshot: PolicySnapshot(tenantDocuments: [:], globalDocuments: [], directory: ""), principal: principal, requests: [:])
        filter.sealTask = { "mcpgw1k.x." + $0 }
        filter.tasks = TaskOwnership(
            all: false, named: ["task-1"], taskRequests: ["7", ExchangeDecisions.requestKey(try JSONParser.parse("1.0"))])
        func filtered(_ text: String) throws -> String {
            let value = try JSONParser.parse(text)
            return (filter.filter(value) ?? value).serialized
        }
        // tasks/get of the caller's task, answered with another task beside it: only the caller's is sealed.
        let answer = try filtered(
            #"{"jsonrpc":"2.0","id":2,"result":{"taskId":"task-1","_meta":{"io.modelcontextprotocol/related-task":{"taskId":"task-2"}}}}"#)
        #expect(answer.contains("mcpgw1k.x.task-1") && !answer.contains("mcpgw1k.x.task-2") && answer.contains(#""task-2""#))
        // The answer to the request that asked for a task: the task it creates is the caller's (an id JSON readers
        // may spell differently too, when it comes back as it went).
        #expect(try filtered(#"{"jsonrpc":"2.0","id":7,"result":{"task":{"taskId":"task-9"}}}"#).contains("mcpgw1k.x.task-9"))
        #expect(try filtered(#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"task","taskId":"task-9"}}"#).contains("mcpgw1k.x.task-9"))
        #expect(try filtered(#"{"jsonrpc":"2.0","id":1.0,"result":{"task":{"taskId":"task-8"}}}"#).contains("mcpgw1k.x.task-8"))
        // … but not when another request's answer names a task, nor a listen acknowledgment of tasks not asked for.
        #expect(!(try filtered(#"{"jsonrpc":"2.0","id":8,"result":{"task":{"taskId":"task-5"}}}"#).contains("mcpgw1k")))
        #expect(
            !(try filtered(
                #"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"taskIds":["task-5"]}}}"#
            ).contains("mcpgw1k")))
        // A server message about another task is withheld, in any spelling; about the caller's (named, or created
        // earlier on this stream), it goes on.
        let related = #""_meta":{"io.modelcontextprotocol/related-task":{"taskId":"task-2"}}"#
        for other in [
            #"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"task-2"}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"task_id":"task-2"}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":2}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"task":{"taskId":"task-2"}}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{\#(related)}}"#,
            #"{"jsonrpc":"2.0","id":"srv-9","method":"elicitation/create","params":{"message":"bot2's task needs input",\#(related)}}"#,
            #"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,\#(related)}}"#,
        ] {
            #expect(filter.withholds(try JSONParser.parse(other)), "\(other)")
        }
        let own = try JSONParser.parse(#"{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-1"}}"#)
        let created = try JSONParser.parse(#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"task-9"}}"#)
        let elicitation = try JSONParser.parse(
            #"{"jsonrpc":"2.0","id":"srv-1","method":"elicitation/create","params":{"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"task-1"}}}}"#
        )
        #expect(!filter.withholds(own) && !filter.withholds(created) && !filter.withholds(elicitation))
        let other = try JSONParser.parse(#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"task-2"}}"#)
        #expect(filter.withoutWithheld(JSONValue.array([other, own])) == JSONValue.array([own]))
        // An upstream that scopes tasks to the caller's session: every id is the caller's.
        filter.tasks = TaskOwnership(all: true)
        #expect(!filter.withholds(other))
        #expect(try filtered(#"{"jsonrpc":"2.0","id":8,"result":{"task":{"taskId":"task-5"}}}"#).contains("mcpgw1k.x.task-5"))
    }
}

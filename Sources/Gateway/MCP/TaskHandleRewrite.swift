import StrictJSON

/// Where task ids travel in MCP messages, and the two rewrites that bind them to the caller: on the way out, every
/// task id the upstream hands out is replaced by a handle sealed to the principal (`SessionHandles.seal(task:for:)`);
/// on the way in, every handle is opened again, and a task method whose handle does not open for this caller is
/// refused before anything reaches the upstream.
///
/// Both generations are covered: 2025-11-25 tasks (`result.task.taskId` of a task-augmented call, `tasks/list`'s
/// `result.tasks[].taskId`, `tasks/get`/`tasks/cancel` results, `notifications/tasks/status`, and the
/// `io.modelcontextprotocol/related-task` `_meta` on any message) and the 2026-07-28 tasks extension (`resultType:
/// "task"` results with a top-level `taskId`, `notifications/tasks`, and the `taskIds` of `subscriptions/listen` and
/// its acknowledgment).
enum TaskHandleRewrite {
    /// The `_meta` key that ties a message to a task (2025-11-25).
    static let relatedTaskKey = "io.modelcontextprotocol/related-task"
    /// The extension a 2026-07-28 client declares when it accepts task results.
    static let tasksExtension = "io.modelcontextprotocol/tasks"
    /// Task methods whose `params.taskId` names a server-side task.
    static let methodsNamingATask: Set<String> = ["tasks/get", "tasks/result", "tasks/cancel", "tasks/update"]

    /// A handle the caller presented that does not open for it.
    struct Refused: Error {
        /// The request's id, when the refused message is a request.
        let id: JSONValue?
        /// What the audit record says.
        let reason: String
    }

    /// Whether the answer to `message` may carry task ids: a task method, `subscriptions/listen`, or a `tools/call`
    /// that asks for a task (2025-11-25 `params.task`) or accepts one (the 2026-07-28 tasks extension).
    static func answerMayCarryTasks(_ message: JSONRPCMessage) -> Bool {
        guard message.kind == .request, let method = message.method else { return false }
        if method.hasPrefix("tasks/") || method == "subscriptions/listen" { return true }
        guard method == "tools/call", let params = message.params?.objectValue else { return false }
        if params["task"] != nil { return true }
        let capabilities = params["_meta"]?.objectValue?[ExchangeDecisions.capabilitiesKey]?.objectValue
        return capabilities?["extensions"]?.objectValue?[tasksExtension] != nil
    }

    /// Whether a request body must be read for task handles: it holds a task method, `subscriptions/listen`, a
    /// request naming a related task, or a sealed handle anywhere (the places `opened` requires handles, and the
    /// ones it opens).
    static func requestMayCarryHandles(_ messages: [JSONRPCMessage], body: UnsafeRawBufferPointer) -> Bool {
        let namesTasks = messages.contains { message in
            guard let method = message.method else { return false }
            if method.hasPrefix("tasks/") || method == "subscriptions/listen" { return true }
            return message.kind == .request && message.params?.objectValue?["_meta"]?.objectValue?[relatedTaskKey] != nil
        }
        if namesTasks { return true }
        // Every request body is scanned, so this is a plain loop over its bytes: `mcpgw1k.` starts with `m` and
        // its other bytes are compared only where an `m` is followed by `cpgw1k.`.
        let needle: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (109, 99, 112, 103, 119, 49, 107, 46)
        guard body.count >= 8 else { return false }
        var index = 0
        while index <= body.count - 8 {
            if body[index] == needle.0 && body[index + 1] == needle.1 && body[index + 2] == needle.2 && body[index + 3] == needle.3
                && body[index + 4] == needle.4 && body[index + 5] == needle.5 && body[index + 6] == needle.6
                && body[index + 7] == needle.7
            {
                return true
            }
            index += 1
        }
        return false
    }

    // MARK: - Upstream to client

    /// `message` (from the upstream) with every task id it carries that `owns` says is the caller's sealed by `seal`;
    /// nil when it carries none. Ids the caller does not own are left as they are: a raw id opens nothing, since task
    /// methods take only handles, while a sealed one would hand the caller another agent's task.
    static func sealed(_ message: JSONObject, seal: (String) -> String, owns: (String) -> Bool = { _ in true }) -> JSONObject? {
        var changed = false
        func sealID(_ value: JSONValue) -> JSONValue {
            guard case .string(let id) = value, owns(id) else { return value }
            changed = true
            return .string(seal(id))
        }
        func sealIDs(_ value: JSONValue) -> JSONValue {
            guard case .array(let ids) = value else { return value }
            return .array(ids.map(sealID))
        }
        func sealTask(_ task: JSONObject) -> JSONObject { task.updating("taskId", sealID) }
        func sealMeta(_ object: JSONObject) -> JSONObject {
            object.updatingObject("_meta") { $0.updatingObject(relatedTaskKey, sealTask) }
        }
        var rewritten = message
        rewritten = rewritten.updatingObject("result") { result in
            sealMeta(result).updating("taskId", sealID).updatingObject("task", sealTask).updating("tasks") { tasks in
                guard case .array(let items) = tasks else { return tasks }
                return .array(items.map { item in item.objectValue.map { .object(sealTask($0)) } ?? item })
            }
        }
        let method = message["method"]?.stringValue ?? ""
        rewritten = rewritten.updatingObject("params") { params in
            var params = sealMeta(params)
            if method.hasPrefix("notifications/tasks") { params = sealTask(params) }
            if method == "notifications/subscriptions/acknowledged" {
                params = params.updatingObject("notifications") { $0.updating("taskIds", sealIDs) }
            }
            return params
        }
        return changed ? rewritten : nil
    }

    /// The tasks a server message (a request or a notification; responses answer the caller's own requests) is
    /// about: the task of a task notification (`notifications/tasks/status`, 2026-07-28 `notifications/tasks`; its
    /// `params.taskId` or `params.task.taskId`) and the related task of any message (`_meta`), in every spelling a
    /// lenient client reads, every repeated key included. A value that is not a string is given as one no task has,
    /// so that it is never taken for the caller's.
    static func taskReferences(_ message: JSONObject) -> [String] {
        let methods = message.members.filter { $0.key == "method" }.compactMap(\.value.stringValue)
        guard !methods.isEmpty else { return [] }
        let isTaskNotification = methods.contains { $0.hasPrefix("notifications/tasks") }
        var references: [String] = []
        func collect(_ object: JSONObject) {
            for member in object.members where isTaskIDKey(member.key) {
                references.append(member.value.stringValue ?? "\u{0}not a task id: " + member.value.serialized)
            }
        }
        for params in message.members where params.key == "params" {
            guard let params = params.value.objectValue else { continue }
            if isTaskNotification {
                collect(params)
                for task in params.members where task.key == "task" { task.value.objectValue.map(collect) }
            }
            for meta in params.members where meta.key == "_meta" {
                for related in meta.value.objectValue?.members ?? [] where related.key == relatedTaskKey {
                    related.value.objectValue.map(collect)
                }
            }
        }
        return references
    }

    /// The task a response creates for the caller, when it answers a request that asked for one: the 2025-11-25
    /// `result.task.taskId`, or the 2026-07-28 `result.taskId` of a `resultType: "task"` result.
    static func createdTask(_ result: JSONObject) -> String? {
        if let id = result["task"]?.objectValue?["taskId"]?.stringValue { return id }
        guard result["resultType"]?.stringValue == "task" else { return nil }
        return result["taskId"]?.stringValue
    }

    // MARK: - Client to upstream

    /// `message` (from the client) with every task handle it carries replaced by the upstream's task id, as `open`
    /// reads it (a failure: the handle does not open for this caller, and why); nil when it carries none.
    ///
    /// Wherever a client names one of the server's tasks it must do so with a handle: a task method's `taskId`,
    /// `subscriptions/listen`'s `taskIds`, and the related-task `_meta` of a request. A raw id there is refused:
    /// passed on, the upstream would answer about that task and the answer's ids would be sealed to this caller,
    /// turning a guessed id into a handle of its own. Only the related-task `_meta` of a response or a notification
    /// may carry a value that is not a handle: the client's own task (one the server asked it to run).
    static func opened(
        _ message: JSONObject, open: (String) -> Result<String, SessionHandles.Problem>
    ) throws(Refused) -> JSONObject? {
        let method = message["method"]?.stringValue
        let id = method == nil ? nil : message["id"]
        let isRequest = method != nil && message["id"] != nil
        var refusal: Refused?
        var changed = false
        func openID(_ value: JSONValue, required: Bool) -> JSONValue {
            guard case .string(let handle) = value, required || handle.hasPrefix(SessionHandles.taskHandlePrefix) else {
                if required { refusal = refusal ?? Refused(id: id, reason: "\(method ?? "") needs task handles issued by the gateway") }
                return value
            }
            let task: String
            switch open(handle) {
            case .success(let opened): task = opened
            case .failure(let problem):
                refusal = refusal ?? Refused(id: id, reason: "task handle \(problem)")
                return value
            }
            changed = true
            return .string(task)
        }
        func openMeta(_ object: JSONObject) -> JSONObject {
            object.updatingObject("_meta") {
                $0.updatingObject(relatedTaskKey) { $0.updatingMembers(where: isTaskIDKey) { openID($0, required: isRequest) } }
            }
        }
        func openIDs(_ ids: JSONValue) -> JSONValue {
            guard case .array(let items) = ids else {
                // One id given bare would be read as one by a lenient upstream: it must be a handle too.
                return openID(ids, required: true)
            }
            return .array(items.map { openID($0, required: true) })
        }
        var rewritten = message.updatingObject("result", openMeta)
        if let method, methodsNamingATask.contains(method),
            !(message["params"]?.objectValue?.members.contains { isTaskIDKey($0.key) } ?? false)
        {
            throw Refused(id: id, reason: "\(method) needs params.taskId")
        }
        rewritten = rewritten.updatingObject("params") { params in
            var params = openMeta(params)
            if let method, methodsNamingATask.contains(method) {
                params = params.updatingMembers(where: isTaskIDKey) { openID($0, required: true) }
            }
            if method == "subscriptions/listen" {
                // In `notifications` (in any spelling a lenient server reads as it), where the protocol puts them, or
                // directly in `params`, where a lenient server may look too.
                params = params.updatingMembers(where: isTaskIDsKey, openIDs).updatingMembers(where: isNotificationsKey) {
                    $0.objectValue.map { .object($0.updatingMembers(where: isTaskIDsKey, openIDs)) } ?? $0
                }
            }
            return params
        }
        if let refusal { throw refusal }
        return changed ? rewritten : nil
    }

    /// Whether `key` reads as `taskId` to a lenient server (`task_id`, `TaskId`, …).
    static func isTaskIDKey(_ key: String) -> Bool { LenientKey.matches(key, "taskid") }

    /// Whether `key` reads as `taskIds` to a lenient server (`task_ids`, …).
    static func isTaskIDsKey(_ key: String) -> Bool { LenientKey.matches(key, "taskids") }

    /// Whether `key` reads as `notifications` to a lenient server (`Notifications`, …).
    static func isNotificationsKey(_ key: String) -> Bool { LenientKey.matches(key, "notifications") }
}

extension JSONObject {
    /// This object with the value of `key` (when present) replaced by `transform` of it.
    func updating(_ key: String, _ transform: (JSONValue) -> JSONValue) -> JSONObject {
        guard members.contains(where: { $0.key == key }) else { return self }
        return JSONObject(members.map { $0.key == key ? Member(key: key, value: transform($0.value)) : $0 })
    }

    /// This object with the value of every member whose key satisfies `matches` replaced by `transform` of it.
    func updatingMembers(where matches: (String) -> Bool, _ transform: (JSONValue) -> JSONValue) -> JSONObject {
        guard members.contains(where: { matches($0.key) }) else { return self }
        return JSONObject(members.map { matches($0.key) ? Member(key: $0.key, value: transform($0.value)) : $0 })
    }

    /// This object with the object under `key` (when there is one) replaced by `transform` of it.
    func updatingObject(_ key: String, _ transform: (JSONObject) -> JSONObject) -> JSONObject {
        updating(key) { value in value.objectValue.map { .object(transform($0)) } ?? value }
    }
}

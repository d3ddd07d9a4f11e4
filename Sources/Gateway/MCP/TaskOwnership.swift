import StrictJSON

/// Which of the upstream's task ids in one answer (or on one stream) are the caller's. The upstream sees every agent
/// of a tenant as one client (the gateway presents one credential for all), so a task it names unasked may be
/// another agent's: only these are the caller's, and only these are sealed to it (`TaskHandleRewrite.sealed`), while
/// a server message about any other task is withheld (`ListFilter.withholds`):
/// - the tasks the caller named with its handles in the request answered here;
/// - the task a request of the caller's created (the result answering a request that asked for one), and on the same
///   stream every later message about it;
/// - every task, where the tenant's upstream scopes tasks to the MCP session and the answer is in one (sealed to the
///   caller).
///
/// A reference type: the tasks created are learned as the answer passes, by whichever copy of the filter reads it.
final class TaskOwnership {
    /// Every task id is the caller's.
    let all: Bool
    /// The upstream's ids of the tasks the caller named with its handles.
    let named: Set<String>
    /// The ids (`ExchangeDecisions.requestKey`) of the requests answered here that asked for a task.
    let taskRequests: Set<String>
    /// The tasks those requests created, as their results passed.
    private(set) var created: Set<String> = []

    init(all: Bool, named: Set<String> = [], taskRequests: Set<String> = []) {
        self.all = all
        self.named = named
        self.taskRequests = taskRequests
    }

    /// Whether the task `id` is the caller's.
    func owns(_ id: String) -> Bool { all || named.contains(id) || created.contains(id) }

    /// Learns the task `message` creates, when it is the result of a request here that asked for one.
    func learn(from message: JSONObject) {
        guard !taskRequests.isEmpty, message["method"] == nil, let id = message["id"],
            taskRequests.contains(ExchangeDecisions.requestKey(id)), let result = message["result"]?.objectValue,
            let task = TaskHandleRewrite.createdTask(result)
        else { return }
        created.insert(task)
    }
}

/// Which MCP methods a policy can decide. The gateway forwards protocol plumbing without a policy decision (lists are
/// filtered on the way back by the rules of the calls they list), and decides a resource subscription as a read of its
/// URI: a rule naming such a method would never apply, so it is refused when the policy loads, and `policy explain` /
/// `evaluate` refuse to decide it. A rate limit may name a plumbing request (a list, `initialize`, `ping`): the gateway
/// counts those without deciding them. The gateway's method table (`MCPMethod`) is built from these.
public enum PolicyMethods {
    /// Protocol plumbing in every protocol generation: forwarded without a policy decision, still audited.
    public static let plumbing: Set<String> = [
        "tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/subscribe",
        "resources/unsubscribe", "notifications/cancelled", "notifications/progress", "notifications/message",
        "notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed",
        "notifications/resources/updated", "notifications/tasks/status", "notifications/elicitation/complete",
        // Sent by the client while it negotiates: plumbing whatever version it announces.
        "initialize", "notifications/initialized", "server/discover", "subscriptions/listen",
    ]

    /// Legacy-only plumbing that protocol version 2026-07-28 removed (refused there, forwarded before).
    public static let removedInModern: Set<String> = ["ping", "logging/setLevel", "notifications/roots/list_changed"]

    /// Methods decided as another method: a subscription to a resource (either form) as a read of its URI.
    public static let decidedAs: [String: String] = ["resources/subscribe": "resources/read", "subscriptions/listen": "resources/read"]

    /// Why a rate limit on `method` would never count anything, or nil. Plumbing requests are counted (a limit on
    /// `tools/list` bounds how often an agent asks for its catalogue); notifications never are (they have no answer to
    /// refuse with), nor methods decided as another method (`resources/subscribe`, decided as a read and not counted).
    public static func uncountedProblem(_ method: String) -> String? {
        if let other = decidedAs[method] {
            return "\(method) is decided as \(other) of each resource URI it names, and not counted: a rate limit on it would never apply"
        }
        guard method.hasPrefix("notifications/") else { return nil }
        return "\(method) is a notification, which has no answer and is never counted: a rate limit on it would never apply"
    }

    /// Whether `method` is a request the gateway forwards without a policy decision (counted by rate limits naming it).
    public static func isPlumbingRequest(_ method: String) -> Bool {
        (plumbing.contains(method) || removedInModern.contains(method)) && !method.hasPrefix("notifications/")
            && decidedAs[method] == nil
    }

    /// Why a rule on `method` would never apply (the gateway never asks the policy about it), or nil.
    public static func neverDecidedProblem(_ method: String) -> String? {
        if let other = decidedAs[method] {
            return "\(method) is decided as \(other) of each resource URI it names: write the rule for \(other)"
        }
        guard plumbing.contains(method) || removedInModern.contains(method) else { return nil }
        return
            "\(method) is protocol plumbing, forwarded without a policy decision (lists are filtered by the rules of the calls they list): a rule on it would never apply"
            + (isPlumbingRequest(method) ? " (a rate limit may count it)" : "")
    }
}

public import StrictJSON
public import Foundation
import Identity

/// One decision, as one JSON line of the audit log.
public struct AuditRecord: Sendable {
    /// What happened.
    public enum Decision: String, Sendable {
        /// Forwarded.
        case allow
        /// Forwarded and marked for audit.
        case audit
        /// Refused by policy.
        case deny
        /// Refused by a rate limit.
        case rateLimited = "rate_limited"
        /// Refused: the caller was not authenticated.
        case authenticationFailed = "authentication_failed"
        /// Refused: the request could not be read.
        case malformed
    }

    /// When the decision was made.
    public var time = Date()
    /// The gateway's id for the HTTP request (shared by the messages of a batch).
    public var requestID: String
    /// The caller's tenant, when known.
    public var tenant: String?
    /// The caller's agent, when known.
    public var agent: String?
    /// `mtls`, `jwt` or `both`, when authenticated.
    public var authMethod: String?
    /// The client's address.
    public var clientAddress: String?
    /// The HTTP method of the request.
    public var httpMethod: String
    /// The JSON-RPC method (or `stream` for a GET, `session_end` for a DELETE).
    public var method: String?
    /// The tool name, resource URI or prompt name.
    public var target: String?
    /// The JSON-RPC id, as JSON text.
    public var jsonrpcID: String?
    /// The decision.
    public var decision: Decision
    /// The deciding rule (`default`, a rule id, a rate limit id, or a code such as `token_expired`).
    public var rule: String?
    /// Why, in words.
    public var reason: String
    /// The upstream's HTTP status, when the call was forwarded (or 502/504 when the upstream failed).
    public var upstreamStatus: Int?
    /// Milliseconds from receiving the request to the decision (refusals) or to the upstream's response head.
    public var latencyMilliseconds: Double?
    /// The MCP session id, if any.
    public var sessionID: String?
    /// The arguments: keys and a digest by default, in full where a rule asks.
    public var arguments: JSONValue?

    /// A record for one decision.
    public init(requestID: String, httpMethod: String, decision: Decision, reason: String) {
        self.requestID = requestID
        self.httpMethod = httpMethod
        self.decision = decision
        self.reason = reason
    }

    /// `{"keys":[...],"sha256":"..."}` — what the audit log keeps of arguments unless a rule asks for them in full.
    public static func redacted(_ arguments: JSONValue?) -> JSONValue? {
        guard let arguments else { return nil }
        let keys = arguments.objectValue?.keys ?? []
        return .object(JSONObject([
            .init(key: "keys", value: .array(keys.map(JSONValue.string))),
            .init(key: "sha256", value: .string(SHA256Digest.hex(Array(arguments.serialized.utf8)))),
        ]))
    }

    /// `2026-11-25T01:07:29.777Z`: UTC, millisecond precision. Formatted by hand because it runs for every
    /// record and Foundation's ISO 8601 formatter is far slower.
    static func timestamp(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        var whole = time_t(seconds.rounded(.down))
        var parts = tm()
        gmtime_r(&whole, &parts)
        let milliseconds = min(999, Int(((seconds - seconds.rounded(.down)) * 1000).rounded(.down)))
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(milliseconds), 3))Z"
    }

    /// The record as one line of JSON (no trailing newline).
    public var jsonLine: String {
        var members: [JSONObject.Member] = [
            .init(key: "time", value: .string(Self.timestamp(time))),
            .init(key: "request_id", value: .string(requestID)),
        ]
        func add(_ key: String, _ value: String?) { if let value { members.append(.init(key: key, value: .string(value))) } }
        add("tenant", tenant)
        add("agent", agent)
        add("auth_method", authMethod)
        add("client_address", clientAddress)
        add("http_method", httpMethod)
        add("method", method)
        add("target", target)
        if let jsonrpcID { members.append(.init(key: "jsonrpc_id", value: (try? JSONParser.parse(jsonrpcID)) ?? .string(jsonrpcID))) }
        members.append(.init(key: "decision", value: .string(decision.rawValue)))
        add("rule", rule)
        members.append(.init(key: "reason", value: .string(reason)))
        if let upstreamStatus { members.append(.init(key: "upstream_status", value: .number(JSONNumber(Int64(upstreamStatus))))) }
        if let latencyMilliseconds, let number = JSONNumber((latencyMilliseconds * 1000).rounded() / 1000) {
            members.append(.init(key: "latency_ms", value: .number(number)))
        }
        add("session_id", sessionID)
        if let arguments { members.append(.init(key: "arguments", value: arguments)) }
        return JSONValue.object(JSONObject(members)).serialized
    }
}

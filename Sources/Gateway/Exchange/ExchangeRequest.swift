import Identity
import NIOCore
import NIOHTTP1
import Policy
import StrictJSON
import TLS

/// What the gateway knows about one HTTP request while it is handled: its head, who sent it, and when.
///
/// A class, so that handing it to the decision steps costs one reference, not a copy of every header and
/// certificate field. `principal` is set once, on the connection's event loop, before the request is handed to
/// work off the loop; nothing mutates it afterwards, which is why sharing it across threads is safe.
final class ExchangeRequest: @unchecked Sendable {
    /// The request head as received.
    let head: HTTPRequestHead
    /// The headers of `head` the gateway reads, found in one pass.
    let headers: RequestHeaderValues
    /// The gateway's id for it.
    let requestID: String
    /// When its head arrived.
    let received: NIODeadline
    /// The client's address.
    let clientAddress: String?
    /// The connection's TLS handshake (peer certificate), if TLS.
    let handshake: TLSHandshakeCompleted?
    /// The caller, once authenticated.
    var principal: Principal?
    /// The upstream's session id, from the sealed `Mcp-Session-Id` handle the client presented.
    var upstreamSession: String?
    /// The upstream's event id, from the sealed `Last-Event-ID` the client presented.
    var upstreamLastEventID: String?
    /// Which transport the request uses.
    var transport = Transport.streamableHTTP
    /// The request's trace context (W3C), continued from the client's or started here.
    var trace: TraceContext?
    /// The tenant the request's path names (`/tenants/<tenant>/…`): its OAuth metadata is what a `401` points to,
    /// and only its principals are served there.
    var pathTenant: String?
    /// The upstream path and query to send the request to, when not the endpoint's own (a legacy message endpoint).
    var upstreamTarget: String?
    /// The session a record names: the client's `Mcp-Session-Id`, or on the legacy transport the message handle its
    /// stream announced (found by review: two legacy sessions of one agent could not be told apart in the log).
    /// Only an authenticated request names one: before that, it is whatever the caller chose to write, and the log
    /// would attribute an anonymous caller's refusals to someone's session.
    var recordedSession: String? { principal == nil ? nil : headers.first(.mcpSessionID) ?? messageHandle }
    /// The legacy message handle (`session=` of `POST /messages`), once opened.
    var messageHandle: String?

    /// The MCP transports the gateway serves.
    enum Transport: Equatable {
        /// Streamable HTTP (2025-03-26 and later): the MCP endpoint.
        case streamableHTTP
        /// Legacy HTTP+SSE (2024-11-05): `GET /sse`, the server's stream.
        case legacyStream
        /// Legacy HTTP+SSE: `POST /messages?session=…`, a client message.
        case legacyMessages
    }

    init(
        head: HTTPRequestHead, headers: RequestHeaderValues, requestID: String, received: NIODeadline, clientAddress: String?,
        handshake: TLSHandshakeCompleted?
    ) {
        self.head = head
        self.headers = headers
        self.requestID = requestID
        self.received = received
        self.clientAddress = clientAddress
        self.handshake = handshake
    }

    /// Microseconds since the head arrived.
    var elapsedMicroseconds: Int { Int((NIODeadline.now() - received).nanoseconds / 1000) }

    /// A record of this request with the caller's identity filled in.
    /// `target`, `jsonrpcID`, `arguments` and `sharedLimits` describe one message of the body, when the record is a
    /// message's.
    func record(
        _ decision: AuditRecord.Decision, _ reason: String, rule: String? = nil, method: String? = nil, target: String? = nil,
        jsonrpcID: JSONValue? = nil, arguments: AuditRecord.LoggedArguments? = nil, sharedLimits: String? = nil
    ) -> AuditRecord {
        AuditRecord(
            requestID: requestID, httpMethod: head.method.rawValue, decision: decision, reason: reason,
            tenant: principal?.tenant, agent: principal?.agent, authMethod: principal?.method.rawValue,
            clientAddress: clientAddress, method: method, target: target, jsonrpcID: jsonrpcID, rule: rule,
            latencyMicroseconds: elapsedMicroseconds, sessionID: recordedSession,
            traceID: trace?.traceID, arguments: arguments, sharedLimits: sharedLimits)
    }

    /// A refusal of a request that could not be read, with its record.
    func malformed(_ error: MCPRequestError, status: HTTPResponseStatus = .badRequest) -> Refusal {
        Refusal(
            status: status, id: error.id, code: error.code, message: error.description,
            records: [record(.malformed, error.description, rule: "jsonrpc_\(-error.code)")])
    }

    /// A refusal because the gateway cannot serve the request now (503 unless told otherwise).
    /// `detail`, when given, goes to the record only (the caller sees `reason`).
    func unavailable(
        _ reason: String, rule: String, code: Int, status: HTTPResponseStatus = .serviceUnavailable,
        headers: [(String, String)] = [], detail: String? = nil
    ) -> Refusal {
        Refusal(
            status: status, id: nil, code: code, message: reason, headers: headers,
            records: [record(.unavailable, detail.map { "\(reason): \($0)" } ?? reason, rule: rule)])
    }
}

/// One JSON-RPC message's decision, ready for its audit record and its refusal. A class: a decision is read from
/// several places on its way (survey, records, refusal), and a copy of a struct of a message, its arguments and its
/// policy decision retained every string and array in them.
final class DecidedMessage {
    /// The message.
    let message: JSONRPCMessage
    /// The tool name, resource URI or prompt name it names.
    let target: String?
    /// Its arguments.
    let arguments: JSONValue?
    /// The policy's decision on it.
    let decision: PolicyDecision
    /// Where `arguments` lie in the parsed body.
    let argumentBytes: Range<Int>?
    /// SHA-256 of those bytes, for the audit record (taken, once, when the record redacts the arguments).
    private(set) var argumentDigest: SHA256Digest?

    /// A decided message.
    init(
        message: JSONRPCMessage, target: String?, arguments: JSONValue?, decision: PolicyDecision, argumentBytes: Range<Int>? = nil
    ) {
        self.message = message
        self.target = target
        self.arguments = arguments
        self.decision = decision
        self.argumentBytes = argumentBytes
    }

    /// Takes the digest of the arguments' bytes in `body` (the bytes the message was parsed from).
    func digestArguments(in body: ByteBuffer) {
        guard let range = argumentBytes else { return }
        argumentDigest = body.withUnsafeReadableBytes { SHA256Digest(of: UnsafeRawBufferPointer(rebasing: $0[range])) }
    }
}

/// What to do with a request the gateway accepts: where it goes and the records written once the upstream answered.
struct ForwardPlan {
    /// What the records say, completed with the upstream's status.
    var records: [AuditRecord]
    /// How the response is handled.
    var response: ResponseHandling
    /// The body to forward: the very bytes that were parsed and decided.
    var body: ByteBuffer?
    /// Whether this is a long-lived GET stream (counted against stream budgets).
    var isStream: Bool
    /// The list requests in the body, by JSON-RPC id (serialised): their results are filtered on the way back.
    var listRequests: [String: ListFilter.Kind] = [:]
    /// Every request id in the body, in canonical form (as forwarded).
    var requestIDs: Set<String> = []
    /// Whether list requests went upstream under ids of the gateway's (`ListRequestIDs`): every answer with a body is
    /// then read, errors too, to give the client its ids back.
    var renamesListRequests = false
    /// Whether the body holds a `tools/call` request (its answer may take the tenant's call timeout).
    var isToolCall = false
    /// The `Mcp-Name` the upstream gets instead of the client's: the upstream's task id for a task method whose
    /// handle the client named.
    var upstreamName: String?
    /// The call deadline the deciding policy rule sets, if it does (overrides the tenant's).
    var ruleCallTimeout: Duration?
    /// The upstream's task ids the client named with its handles (`ListFilter.ownedTasks`).
    var ownedTasks: Set<String> = []
    /// The ids (canonical) of the requests that ask for a task (`ListFilter.taskRequestIDs`).
    var taskRequestIDs: Set<String> = []

    /// Whether the exchange opens a listening stream, which lasts beyond the request: a GET stream, or a
    /// `subscriptions/listen` (2026-07-28). Both count against the stream budgets and have their credentials watched.
    var listens: Bool { isStream || records.contains { $0.method == "subscriptions/listen" } }

    /// How the upstream's answer is passed on.
    enum ResponseHandling: Equatable {
        /// Streamed through as it arrives.
        case relay
        /// List results filtered to what the caller may use, and task ids sealed to it: a JSON answer collected
        /// (bounded) first, an SSE answer one event at a time.
        case filterLists
    }
}

import AsyncHTTPClient
import Foundation
import Identity
import NIOCore
import NIOHTTP1
import Policy
import StrictJSON
import TLS

/// One HTTP request to the MCP endpoint, from authentication to the last byte of the response.
///
/// Runs as a task off the event loop; writes its response through the channel, whose HTTP pipeline keeps
/// requests of one connection in order.
struct MCPExchange: Sendable {
    let services: GatewayServices
    let channel: any Channel
    let head: HTTPRequestHead
    let body: [UInt8]
    let handshake: TLSHandshakeCompleted?
    let clientAddress: String?
    let received = ContinuousClock.now
    let requestID: String = {
        var generator = SystemRandomNumberGenerator()
        return String(generator.next() as UInt64, radix: 16) + String(generator.next() as UInt32, radix: 16)
    }()

    /// One message's decision, ready for its audit record and its refusal.
    struct Decided {
        let message: JSONRPCMessage
        let target: String?
        let arguments: JSONValue?
        let decision: PolicyDecision
    }

    func run() async {
        switch head.method {
        case .POST: await post()
        case .GET: await passThrough(method: "stream")
        case .DELETE: await passThrough(method: "session_end")
        default:
            var record = baseRecord(.malformed, "HTTP method \(head.method.rawValue) is not allowed on the MCP endpoint", principal: nil)
            record.rule = "http_method"
            guard await audit([record]) else { return }
            await sendJSON(status: .methodNotAllowed, json: #"{"error":"method not allowed","allow":["GET","POST","DELETE"]}"#,
                           extraHeaders: [("Allow", "GET, POST, DELETE")])
        }
    }

    var milliseconds: Double {
        let elapsed = received.duration(to: .now).components
        return Double(elapsed.seconds) * 1000 + Double(elapsed.attoseconds) / 1e15
    }

    func baseRecord(_ decision: AuditRecord.Decision, _ reason: String, principal: Principal?) -> AuditRecord {
        var record = AuditRecord(requestID: requestID, httpMethod: head.method.rawValue, decision: decision, reason: reason)
        record.tenant = principal?.tenant
        record.agent = principal?.agent
        record.authMethod = principal?.method.rawValue
        record.clientAddress = clientAddress
        record.sessionID = head.headers.first(name: "mcp-session-id")
        record.latencyMilliseconds = milliseconds
        return record
    }

    /// Appends records; when the log refuses, answers 503 and returns false (the caller must stop).
    func audit(_ records: [AuditRecord]) async -> Bool {
        do {
            for record in records { try services.audit.append(record) }
            return true
        } catch {
            await sendJSONRPCError(status: .serviceUnavailable, id: nil, code: GatewayErrorCode.auditUnavailable,
                                   message: "audit log unavailable; request refused", data: nil)
            return false
        }
    }

    // MARK: - Authentication

    /// The caller's principal, or nil after answering 401/403 and auditing the failure.
    func authenticate() async -> Principal? {
        let authorizations = head.headers["authorization"]
        var token: String?
        var failure: AuthenticationError?
        if authorizations.count > 1 {
            failure = .malformedToken("more than one Authorization header")
        } else if let authorization = authorizations.first {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                token = parts[1].trimmingCharacters(in: .whitespaces)
            } else {
                failure = .malformedToken("Authorization must be 'Bearer <token>'")
            }
        }
        if failure == nil {
            do {
                return try services.authenticator.authenticate(
                    certificate: handshake?.peerCertificate, bearerToken: token, now: Date())
            } catch {
                failure = error
            }
        }
        let error = failure!
        var record = baseRecord(.authenticationFailed, error.description, principal: nil)
        record.rule = error.code
        if let certificate = handshake?.peerCertificate { record.agent = certificate.leaf.uris.first ?? certificate.leaf.subject }
        guard await audit([record]) else { return nil }
        // Credentials that were each valid but disagree are a 403; everything else asks for credentials (401).
        let forbidden: Bool
        switch error {
        case .tenantMismatch, .agentMismatch: forbidden = true
        default: forbidden = false
        }
        var challenge = #"Bearer realm="mcpgw""#
        if case .noCredentials = error {} else { challenge += #", error="invalid_token", error_description="\#(error.code)""# }
        await sendJSONRPCError(
            status: forbidden ? .forbidden : .unauthorized, id: nil, code: GatewayErrorCode.authenticationFailed,
            message: "authentication failed: \(error.description)", data: .object(JSONObject(["code": .string(error.code)])),
            extraHeaders: forbidden ? [] : [("WWW-Authenticate", challenge)])
        return nil
    }

    /// Refuses a session id that another principal created (404, as for an unknown session).
    func checkSession(_ principal: Principal) async -> Bool {
        guard let session = head.headers.first(name: "mcp-session-id"),
            let owner = services.sessions.owner(of: session), owner != "\(principal.tenant)/\(principal.agent)"
        else { return true }
        var record = baseRecord(.deny, "session belongs to another principal", principal: principal)
        record.rule = "session_binding"
        guard await audit([record]) else { return false }
        await sendJSONRPCError(status: .notFound, id: nil, code: GatewayErrorCode.sessionNotYours,
                               message: "unknown session for this caller", data: nil)
        return false
    }

    // MARK: - POST

    /// Headers that must appear at most once: the gateway reads them and the upstream reads them, and two
    /// copies could be read differently by each.
    static let singleValuedHeaders = ["content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id", "accept"]

    func post() async {
        guard let principal = await authenticate(), await checkSession(principal) else { return }
        if let repeated = Self.singleValuedHeaders.first(where: { head.headers[$0].count > 1 }) {
            return await refuseMalformed(.invalidRequest("header \(repeated) appears more than once", id: nil), principal: principal)
        }
        let version = head.headers.first(name: "mcp-protocol-version")
        if let version, !MCPMethod.knownVersions.contains(version) {
            return await refuseMalformed(.invalidRequest("unsupported MCP-Protocol-Version '\(version)'", id: nil), principal: principal)
        }
        if let type = head.headers.first(name: "content-type"), !type.lowercased().hasPrefix("application/json") {
            return await refuseMalformed(.invalidRequest("Content-Type must be application/json", id: nil), principal: principal, status: .unsupportedMediaType)
        }
        let parsed: MCPBody
        do {
            parsed = try MCPBody.parse(body, limits: JSONLimits(maximumDepth: services.limits.maximumJSONDepth, maximumBytes: services.limits.maximumBodyBytes))
        } catch {
            return await refuseMalformed(error, principal: principal)
        }
        if parsed.isBatch && !MCPMethod.allowsBatches(protocolVersion: version) {
            return await refuseMalformed(.invalidRequest("JSON-RPC batches are not allowed in protocol version \(version ?? "")", id: nil), principal: principal)
        }
        if let mismatch = headerMismatch(parsed) {
            var record = baseRecord(.malformed, mismatch, principal: principal)
            record.rule = "header_mismatch"
            guard await audit([record]) else { return }
            return await sendJSONRPCError(status: .badRequest, id: parsed.messages.first?.id, code: GatewayErrorCode.headerMismatch, message: mismatch, data: nil)
        }
        var decided: [Decided] = []
        for message in parsed.messages {
            do {
                decided.append(try decide(message, principal: principal))
            } catch {
                return await refuseMalformed(error, principal: principal)
            }
        }
        let refusals = decided.filter { !$0.decision.outcome.permits }
        if refusals.isEmpty {
            await forward(decided, principal: principal)
        } else {
            await refuse(decided, refusals: refusals, principal: principal, isBatch: parsed.isBatch)
        }
    }

    /// `Mcp-Method` / `Mcp-Name` must agree with the body (MCP 2026-07-28); intermediaries check, never trust.
    func headerMismatch(_ parsed: MCPBody) -> String? {
        guard let first = parsed.messages.first, !parsed.isBatch else { return nil }
        if let method = head.headers.first(name: "mcp-method"), method != first.method {
            return "Mcp-Method header '\(method)' does not match the body's method '\(first.method ?? "")'"
        }
        if let name = head.headers.first(name: "mcp-name") {
            let decoded = Self.decodeHeaderValue(name)
            let params = first.params?.objectValue
            let bodyName = params?["name"]?.stringValue ?? params?["uri"]?.stringValue
            if decoded != bodyName { return "Mcp-Name header does not match the body" }
        }
        return nil
    }

    /// `=?base64?…?=` → its UTF-8 text; anything else as is.
    static func decodeHeaderValue(_ value: String) -> String? {
        guard value.hasPrefix("=?base64?"), value.hasSuffix("?=") else { return value }
        let inner = value.dropFirst(9).dropLast(2)
        return Data(base64Encoded: String(inner)).flatMap { String(data: $0, encoding: .utf8) }
    }

    func decide(_ message: JSONRPCMessage, principal: Principal) throws(MCPRequestError) -> Decided {
        guard let method = message.method else {
            return Decided(message: message, target: nil, arguments: nil,
                           decision: Self.passThrough("response to a server request"))
        }
        guard MCPMethod.isGoverned(method) else {
            return Decided(message: message, target: nil, arguments: nil, decision: Self.passThrough("protocol method \(method)"))
        }
        let (target, arguments) = try MCPMethod.target(of: message)
        let request = PolicyRequest(tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: method,
                                    target: target, arguments: arguments)
        return Decided(message: message, target: target, arguments: arguments,
                       decision: services.policy.decide(request, now: services.monotonicSeconds))
    }

    static func passThrough(_ reason: String) -> PolicyDecision {
        PolicyDecision(outcome: .allow, rule: "protocol", document: "", reason: "\(reason): forwarded without a policy decision",
                       matches: [], logArguments: false)
    }

    func record(for item: Decided, principal: Principal, decisionOverride: (AuditRecord.Decision, String)? = nil) -> AuditRecord {
        let outcome: AuditRecord.Decision
        switch item.decision.outcome {
        case .allow: outcome = .allow
        case .audit: outcome = .audit
        case .deny: outcome = .deny
        case .rateLimited: outcome = .rateLimited
        }
        var record = baseRecord(decisionOverride?.0 ?? outcome, decisionOverride?.1 ?? item.decision.reason, principal: principal)
        record.method = item.message.method ?? "response"
        record.target = item.target
        record.jsonrpcID = item.message.id?.serialized
        record.rule = item.decision.rule
        record.arguments = item.decision.logArguments ? item.arguments : AuditRecord.redacted(item.arguments)
        return record
    }

    func refuseMalformed(_ error: MCPRequestError, principal: Principal?, status: HTTPResponseStatus = .badRequest) async {
        var record = baseRecord(.malformed, error.description, principal: principal)
        record.rule = "jsonrpc_\(-error.code)"
        guard await audit([record]) else { return }
        await sendJSONRPCError(status: status, id: error.id, code: error.code, message: error.description, data: nil)
    }

    /// Nothing of a body with a refused message is forwarded. Requests get JSON-RPC errors (a batch: one per
    /// request), notifications only an HTTP status.
    func refuse(_ decided: [Decided], refusals: [Decided], principal: Principal, isBatch: Bool) async {
        let first = refusals[0]
        var records: [AuditRecord] = []
        for item in decided {
            if item.decision.outcome.permits {
                records.append(record(for: item, principal: principal, decisionOverride: (.deny, "batch refused: another message in it was refused (\(first.decision.rule))")))
            } else {
                records.append(record(for: item, principal: principal))
            }
        }
        guard await audit(records) else { return }
        var retryAfter: Double?
        for item in refusals { if case .rateLimited(let wait) = item.decision.outcome { retryAfter = max(retryAfter ?? 0, wait) } }
        let status: HTTPResponseStatus = retryAfter != nil ? .tooManyRequests : .ok
        let extra = retryAfter.map { [("Retry-After", String(Int($0.rounded(.up)) < 1 ? 1 : Int($0.rounded(.up))))] } ?? []
        let errors = decided.filter { $0.message.kind == .request }.map { item in
            Self.errorObject(id: item.message.id, for: item.decision.outcome.permits ? first.decision : item.decision,
                             batchNote: item.decision.outcome.permits)
        }
        if errors.isEmpty {
            // Only notifications/responses: no JSON-RPC response may be sent.
            let body = JSONValue.object(JSONObject([
                .init(key: "error", value: .string(retryAfter != nil ? "rate limited" : "denied by policy")),
                .init(key: "rule", value: .string(first.decision.rule)),
                .init(key: "reason", value: .string(first.decision.reason)),
            ])).serialized
            return await sendJSON(status: retryAfter != nil ? .tooManyRequests : .forbidden, json: body, extraHeaders: extra)
        }
        let payload = isBatch ? JSONValue.array(errors).serialized : errors[0].serialized
        await sendJSON(status: status, json: payload, extraHeaders: extra)
    }

    static func errorObject(id: JSONValue?, for decision: PolicyDecision, batchNote: Bool) -> JSONValue {
        var code = GatewayErrorCode.policyDenied
        var message = "denied by policy: \(decision.reason)"
        var data: [JSONObject.Member] = [.init(key: "rule", value: .string(decision.rule)), .init(key: "reason", value: .string(decision.reason))]
        if case .rateLimited(let wait) = decision.outcome {
            code = GatewayErrorCode.rateLimited
            message = "rate limited: \(decision.reason)"
            data.append(.init(key: "retry_after_seconds", value: JSONNumber((wait * 1000).rounded(.up) / 1000).map(JSONValue.number) ?? .null))
        }
        if batchNote { message = "not forwarded: another message in the batch was refused (\(decision.rule))" }
        return .object(JSONObject([
            .init(key: "jsonrpc", value: .string("2.0")),
            .init(key: "id", value: id ?? .null),
            .init(key: "error", value: .object(JSONObject([
                .init(key: "code", value: .number(JSONNumber(Int64(code)))),
                .init(key: "message", value: .string(message)),
                .init(key: "data", value: .object(JSONObject(data))),
            ]))),
        ]))
    }
}

import Identity
import NIOCore
import NIOHTTP1
import Policy
import StrictJSON

import struct Foundation.Date

/// The gateway's decisions about one request, as values: a principal, a plan to forward, or a refusal. Nothing
/// here writes to a channel; `MCPConnectionHandler` performs what these return.
struct ExchangeDecisions {
    let services: GatewayServices

    // MARK: - Authentication (on the head, before any body is read)

    /// The bearer token of the `Authorization` header, or why the header cannot be used.
    static func bearerToken(_ headers: RequestHeaderValues) -> Result<String?, AuthenticationError> {
        guard !headers.isRepeated(.authorization) else { return .failure(.malformedToken("more than one Authorization header")) }
        guard var authorization = headers.first(.authorization) else { return .success(nil) }
        // "Bearer" (any case), one or more spaces, the token; surrounding blanks ignored. Read in place (no copy).
        guard authorization.utf8.count > 7, HeaderText.hasPrefix(authorization, "bearer ") else {
            return .failure(.malformedToken("Authorization must be 'Bearer <token>'"))
        }
        return authorization.withUTF8 { utf8 in
            var start = 7
            var end = utf8.count
            while start < end && (utf8[start] == 0x20 || utf8[start] == 0x09) { start += 1 }
            while end > start && (utf8[end - 1] == 0x20 || utf8[end - 1] == 0x09) { end -= 1 }
            guard start < end else { return .failure(.malformedToken("Authorization must be 'Bearer <token>'")) }
            return .success(String(decoding: UnsafeBufferPointer(rebasing: utf8[start..<end]), as: UTF8.self))
        }
    }

    /// The caller's principal, or the refusal (401, or 403 for credentials that disagree) with its record. With
    /// `cheapOnly`, nil when that needs a fresh signature check (worth leaving the event loop for).
    func authenticate(_ request: ExchangeRequest, cheapOnly: Bool = false) -> Result<Principal, Refusal>? {
        if let refusal = request.handshake?.peerCertificateRefusal {
            // A certificate that no longer verifies: never served as a caller without one (a token alone would pass).
            return .failure(authenticationRefusal(request, .certificateRefused(refusal)))
        }
        let error: AuthenticationError
        switch Self.bearerToken(request.headers) {
        case .failure(let failure):
            error = failure
        case .success(let token):
            do throws(AuthenticationError) {
                guard
                    let principal = try services.authenticator.authenticate(
                        certificate: request.handshake?.peerCertificate, bearerToken: token, now: Date(), cachedTokensOnly: cheapOnly)
                else { return nil }
                return .success(principal)
            } catch let failure {
                error = failure
            }
        }
        return .failure(authenticationRefusal(request, error))
    }

    /// The answer to credentials that do not authenticate: 401 (403 for credentials that disagree), with the
    /// challenge, the failure in general terms, and a record with the detail.
    func authenticationRefusal(_ request: ExchangeRequest, _ error: AuthenticationError) -> Refusal {
        var record = request.record(.authenticationFailed, error.description, rule: error.code)
        if let certificate = request.handshake?.peerCertificate?.leaf ?? request.handshake?.refusedPeerCertificate {
            // What the certificate names goes into the reason, not the record's `agent`: it was not accepted, and its URI
            // may name anyone (another tenant's agent), which a search of the log by agent would take at its word (found
            // by review).
            let named = certificate.uris.first.map { "names \(String($0.prefix(200)))" } ?? "subject \(certificate.subject)"
            if request.handshake?.peerCertificate == nil {
                // A certificate refused after the handshake: which one, for revocation forensics.
                record.reason += " (certificate serial \(certificate.serialNumber), subject \(certificate.subject), \(named))"
            } else {
                record.reason += " (certificate \(named))"
            }
        }
        // A certificate and a token that were each valid but disagree are a 403; everything else asks for credentials
        // (401). A token alone that names another tenant is a token not issued for this resource (RFC 6750
        // `invalid_token`, found by review: it was a 403 "credentials disagree" without a challenge, and an OAuth
        // client could not tell it to fetch another token).
        let tokenAlone = request.handshake?.peerCertificate == nil
        var status: HTTPResponseStatus = .unauthorized
        var (publicCode, publicReason) = (error.publicCode, error.publicReason)
        switch error {
        case .tenantMismatch where tokenAlone:
            (publicCode, publicReason) = ("wrong_tenant", "the token was not issued for this tenant")
        case .tenantMismatch, .agentMismatch: status = .forbidden
        default: break
        }
        var headers: [(String, String)] = []
        if status == .unauthorized {
            let authorizations = request.head.headers.filter { HeaderText.isName($0.name, "authorization") }
            if authorizations.count > 1 {
                // RFC 6750 §3.1: a request that repeats a parameter is an invalid request (400).
                status = .badRequest
                headers = [("WWW-Authenticate", challenge(request, error: error, code: "invalid_request", description: publicReason))]
            } else if let value = authorizations.first?.value,
                value.split(separator: " ", maxSplits: 1).first?.lowercased() != "bearer"
            {
                // An unsupported scheme gets the challenge without an error code (RFC 6750 §3.1).
                headers = [("WWW-Authenticate", challenge(request, error: .noCredentials))]
            } else {
                headers = [("WWW-Authenticate", challenge(request, error: error, description: publicReason))]
            }
        }
        // The caller learns what kind of failure it was, never what is configured; the record keeps the detail.
        var refusal = Refusal(
            status: status, id: nil, code: GatewayErrorCode.authenticationFailed,
            message: "authentication failed: \(publicReason)", data: .object(JSONObject(["code": .string(publicCode)])),
            headers: headers, records: [record])
        if case .unknownKeyID = error, case .success(let token?) = Self.bearerToken(request.headers) {
            refusal.unknownKeyTenant = services.authenticator.tokens.tenantToRefetch(for: token)
        }
        return refusal
    }

    /// The principal for an opaque token its authorization server vouched for, with the client certificate (if any)
    /// agreeing on tenant and agent.
    func introspected(_ request: ExchangeRequest, _ principal: Principal) -> Result<Principal, Refusal> {
        if let refusal = request.handshake?.peerCertificateRefusal {
            return .failure(authenticationRefusal(request, .certificateRefused(refusal)))
        }
        guard let certificate = request.handshake?.peerCertificate else { return .success(principal) }
        do throws(AuthenticationError) {
            let fromCertificate = try services.authenticator.certificates.principal(for: certificate, now: Date())
            return .success(
                try Authenticator.agreeing(
                    fromCertificate, tokenTenant: principal.tenant, tokenAgent: principal.agent, scopes: principal.scopes,
                    tokenExpiry: principal.expiresAt, facts: nil))
        } catch {
            return .failure(authenticationRefusal(request, error))
        }
    }

    /// The `WWW-Authenticate` challenge of a `401`: where the protected resource's metadata is (RFC 9728), the scopes it
    /// knows, and — when a token was presented — `invalid_token` with the failure in general terms.
    /// `code` and `description` replace `invalid_token` and the error's public reason.
    func challenge(
        _ request: ExchangeRequest, error: AuthenticationError, code: String = "invalid_token", description: String? = nil
    ) -> String {
        var challenge = #"Bearer realm="mcpgw""#
        if let resource = services.oauth?.challenged(tenant: request.pathTenant) {
            challenge += #", resource_metadata="\#(resource.metadataURL)""#
            if !resource.scopesSupported.isEmpty { challenge += #", scope="\#(resource.scopesSupported.joined(separator: " "))""# }
        }
        if case .noCredentials = error {
        } else {
            challenge += #", error="\#(code)", error_description="\#(description ?? error.publicReason)""#
        }
        return challenge
    }

    /// The `403` of a call its policy would allow with more scopes (RFC 6750 §3.1 `insufficient_scope`), listing every
    /// scope the call needs, so that the client can ask for a token with them.
    func insufficientScope(_ scopes: [String], tenant: String?) -> (String, String) {
        var challenge = #"Bearer realm="mcpgw", error="insufficient_scope", scope="\#(scopes.joined(separator: " "))""#
        if let resource = services.oauth?.challenged(tenant: tenant) {
            challenge += #", resource_metadata="\#(resource.metadataURL)""#
        }
        challenge += #", error_description="the call needs scope \#(scopes.joined(separator: " "))""#
        return ("WWW-Authenticate", challenge)
    }

    // MARK: - Checks on the head

    /// The request headers the gateway reads and the upstream gets (as they are, or as the gateway's own version).
    static let headersReadAndForwarded: Set<String> = [
        "accept", "content-type", "mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id", "last-event-id",
        "traceparent", "tracestate",
    ]

    /// Checks an authenticated request's head: session ownership, repeated headers, protocol version, content
    /// type (POST), Accept (GET). Nil when it may go on.
    func checkHead(_ request: ExchangeRequest) -> Refusal? {
        let head = request.head
        let principal = request.principal!
        if request.transport == .legacyMessages {
            // The message endpoint's `session` parameter is the handle the gateway gave on the stream.
            let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
            let handle = query.split(separator: "&").first { $0.hasPrefix("session=") }.map { String($0.dropFirst(8)) }
            switch handle.map({ services.sessionHandles.open(messagesEndpoint: $0, for: principal) }) {
            case .success(let target)?:
                request.upstreamTarget = target
                request.messageHandle = handle
            case .failure(let problem)?:
                return Refusal(
                    status: .notFound, id: nil, code: GatewayErrorCode.sessionNotYours, message: "unknown session for this caller",
                    records: [request.record(.deny, "message endpoint handle \(problem)", rule: "session_binding")])
            case nil:
                return request.malformed(.invalidRequest("POST /messages needs the session parameter from the stream", id: nil))
            }
        }
        let headers = request.headers
        // A header the gateway reads and forwards cannot also be for the client's hop only (RFC 9110 §7.6.1 has it
        // removed): the upstream would read the request without it (found by review: `Connection: MCP-Protocol-Version`
        // had the gateway decide under 2025-06-18 and the upstream read 2025-03-26).
        if headers.first(.connection).map(HeaderText.namesOptions) == true || headers.isRepeated(.connection) {
            for option in HeaderText.connectionOptions(request.head.headers)
            where Self.headersReadAndForwarded.contains(option) || MCPHeaderValue.isParamHeader(option) {
                return request.malformed(
                    .invalidRequest("the Connection header names \(option), which the gateway reads and forwards", id: nil))
            }
        }
        // 2026-07-28 has no sessions: a session handle there would make the gateway trust what the upstream scopes to
        // a session (`tasksAreTheCallers`) for a request the upstream does not read as in one.
        if headers.contains(.mcpSessionID), MCPMethod.isModern(headers.first(.mcpProtocolVersion)) {
            return request.malformed(
                .invalidRequest("Mcp-Session-Id is not accepted with MCP-Protocol-Version 2026-07-28, which has no sessions", id: nil))
        }
        if let handle = headers.first(.mcpSessionID) {
            switch services.sessionHandles.open(session: handle, for: principal) {
            case .success(let session): request.upstreamSession = session
            case .failure(let problem):
                return Refusal(
                    status: .notFound, id: nil, code: GatewayErrorCode.sessionNotYours, message: "unknown session for this caller",
                    records: [request.record(.deny, "session handle \(problem)", rule: "session_binding")])
            }
        }
        if let eventID = headers.first(.lastEventID) {
            switch services.sessionHandles.open(event: eventID, session: request.upstreamSession, for: principal) {
            case .success(let event): request.upstreamLastEventID = event
            case .failure(let problem):
                return Refusal(
                    status: .notFound, id: nil, code: GatewayErrorCode.sessionNotYours, message: "unknown Last-Event-ID for this caller",
                    records: [request.record(.deny, "Last-Event-ID \(problem)", rule: "event_binding")])
            }
        }
        if let repeated = headers.repeatedSingleValued
            ?? (headers.hasParameterHeaders ? MCPHeaderValue.repeatedParamHeader(in: head.headers) : nil)
        {
            return request.malformed(.invalidRequest("header \(repeated) appears more than once", id: nil))
        }
        if let name = headers.notUTF8 {
            return request.malformed(.invalidRequest("the value of header \(name) is not valid UTF-8", id: nil))
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (the gateway never routes on it).
        if head.version.major == 1, head.version.minor >= 1, !headers.contains(.host) {
            return request.malformed(.invalidRequest("the Host header is missing (required by HTTP/1.1)", id: nil))
        }
        // …and one whose Host is not a host (found by review: `localhost, evil.example` was accepted).
        if let host = headers.first(.host), !HeaderText.isValidHost(host) {
            return request.malformed(.invalidRequest("the Host header is not a host name or address with an optional port", id: nil))
        }
        // On every method: a GET or DELETE carrying a version the gateway does not know was forwarded with it (found
        // by review).
        if let version = headers.first(.mcpProtocolVersion), !MCPMethod.knownVersions.contains(version) {
            return request.malformed(.invalidRequest("unsupported MCP-Protocol-Version '\(version)'", id: nil))
        }
        switch head.method {
        case .POST:
            // Mcp-Param-* headers mirror arguments only from 2026-07-28 on, and only there does the gateway hold them to
            // the body: sent with an earlier version, they would reach the upstream unchecked.
            if headers.hasParameterHeaders, !MCPMethod.isModern(headers.first(.mcpProtocolVersion)) {
                let reason = "Mcp-Param-* headers are accepted only with MCP-Protocol-Version 2026-07-28"
                return Refusal(
                    status: .badRequest, id: nil, code: GatewayErrorCode.headerMismatch, message: reason,
                    records: [request.record(.malformed, reason, rule: "header_mismatch")])
            }
            if let type = headers.first(.contentType), let problem = JSONMediaType.problem(type) {
                return request.malformed(.invalidRequest(problem, id: nil), status: .unsupportedMediaType)
            }
        case .GET:
            if !(headers.first(.accept)?.contains("text/event-stream") ?? false) {
                return Refusal(
                    status: .notAcceptable, json: #"{"error":"GET needs Accept: text/event-stream"}"#,
                    records: [request.record(.malformed, "GET without Accept: text/event-stream", rule: "accept")])
            }
        default:
            break
        }
        return nil
    }

    /// Whether `message` is a client notification of the protocol's own that names or steers other calls
    /// (`notifications/cancelled`, `progress`, `tasks/status`, `roots/list_changed`): every one but
    /// `notifications/initialized`. Notifications no protocol version defines are decided by policy as usual.
    static func actsOnOtherCalls(_ message: JSONRPCMessage, version: String?) -> Bool {
        guard message.kind == .notification, let method = message.method, method != "notifications/initialized" else { return false }
        return MCPMethod.treatment(of: method, protocolVersion: version) == .plumbing
    }

    /// A plan for GET (server stream) and DELETE (end of session): forwarded without a policy decision.
    func passThroughPlan(_ request: ExchangeRequest) -> ForwardPlan {
        let method = request.head.method == .GET ? "stream" : "session_end"
        let record = request.record(.allow, "\(method): forwarded without a policy decision", rule: "protocol", method: method)
        return ForwardPlan(
            records: [record], response: .relay, body: nil,
            isStream: request.head.method == .GET)
    }

    // MARK: - POST bodies

    /// What became of a POST body.
    enum PostDecision {
        /// Forward it as planned.
        case forward(ForwardPlan)
        /// Refuse it.
        case refuse(Refusal)
        /// Not decided: these shared rate-limit buckets have nothing on hand here. Fetch them and decide again
        /// (nothing was counted for this attempt). `waiting` holds a record for each message of the body, written if
        /// the body is abandoned while it waits.
        case ask([SharedBucket], waiting: [AuditRecord])
    }

    /// Parses and decides a POST body: a plan to forward the exact bytes, or a refusal with its records. On the
    /// `lastAttempt`, a shared bucket with nothing on hand refuses instead of asking Redis again.
    func decidePost(_ request: ExchangeRequest, body: ByteBuffer, lastAttempt: Bool = false) -> PostDecision {
        let shared: (any SharedRateLimits)? =
            lastAttempt ? services.sharedLimits.map { LastAttemptLimits(limiter: $0) } : services.sharedLimits
        return switch decideBody(request, body: body, shared: shared) {
        case .success(let plan): .forward(plan)
        case .failure(.refused(let refusal)): .refuse(refusal)
        case .failure(.mustAsk(let buckets, let waiting)): .ask(buckets, waiting: waiting)
        }
    }

    /// Why a body is not forwarded (yet).
    enum NotForwarded: Error {
        case refused(Refusal)
        /// Waiting for shared rate-limit leases; with a record for each message, should the body be abandoned.
        case mustAsk([SharedBucket], waiting: [AuditRecord])
    }

    private func decideBody(
        _ request: ExchangeRequest, body: ByteBuffer, shared: (any SharedRateLimits)?
    ) -> Result<ForwardPlan, NotForwarded> {
        let principal = request.principal!
        let head = request.head
        let headers = request.headers
        let version = headers.first(.mcpProtocolVersion)
        let parsed: MCPBody
        do {
            parsed = try body.withUnsafeReadableBytes { bytes throws(MCPRequestError) in
                try MCPBody.parse(
                    bytes,
                    limits: JSONLimits(maximumDepth: services.limits.maximumJSONDepth, maximumBytes: services.limits.maximumBodyBytes))
            }
        } catch {
            return .refusing(request.malformed(error))
        }
        if parsed.isBatch && !MCPMethod.allowsBatches(protocolVersion: version) {
            return .refusing(
                request.malformed(.invalidRequest("JSON-RPC batches are not allowed in protocol version \(version ?? "")", id: nil)))
        }
        // Each message of a batch is decided and recorded on its own: a batch of many tiny messages cost the log some
        // eleven times its size (found by review), and filled its room. One record for the whole refused batch.
        if parsed.isBatch && parsed.messages.count > services.limits.maximumBatchMessages {
            let limit = services.limits.maximumBatchMessages
            return .refusing(
                Refusal(
                    status: .payloadTooLarge, id: nil, code: -32600,
                    message: "a batch may hold at most \(limit) messages; this one holds \(parsed.messages.count)",
                    records: [
                        request.record(
                            .malformed, "batch of \(parsed.messages.count) messages, more than \(limit)", rule: "batch_size")
                    ]))
        }
        // A notification carries no id: one that does is a request to a server dispatching by method, and could
        // (`notifications/cancelled`) act on another agent's call.
        if let message = parsed.messages.first(where: {
            $0.kind == .request && ($0.method?.utf8.starts(with: "notifications/".utf8) ?? false)
        }) {
            return .refusing(
                request.malformed(.invalidRequest("\(message.method!) is a notification: it carries no id", id: message.id)))
        }
        if MCPMethod.isModern(version), !parsed.isBatch, let message = parsed.messages.first, message.kind == .notification,
            let method = message.method, MCPMethod.treatment(of: method, protocolVersion: version) != .removed(since: version!)
        {
            // The 2026-07-28 HTTP transport has no client-to-server notifications (closing a response stream cancels
            // its request). Its upstream is stateless and sees every agent of a tenant as one client, so a
            // `notifications/cancelled` naming a request id could reach another agent's call: acknowledged as the
            // protocol's servers do (clients in the field still send them), recorded, and not forwarded.
            let reason = "\(method): not forwarded; protocol version \(version!) has no client-to-server notifications"
            var acknowledged = Refusal(
                status: .accepted, json: "", records: [request.record(.deny, reason, rule: "protocol", method: method)])
            acknowledged.body = []
            return .refusing(acknowledged)
        }
        if MCPMethod.isModern(version), !parsed.isBatch, let message = parsed.messages.first,
            let problem = Self.modernEnvelopeProblem(message, headers, version: version!)
        {
            if case .headerMismatch(let reason, let id) = problem {
                return .refusing(
                    Refusal(
                        status: .badRequest, id: id, code: GatewayErrorCode.headerMismatch, message: reason,
                        records: [request.record(.malformed, reason, rule: "header_mismatch", method: message.method)]))
            }
            return .refusing(request.malformed(problem))
        }
        // A body that says 2026-07-28 (or any version) in `_meta` under another header, or none: a server that reads the
        // body would take it as one version while the gateway applies another's rules (sessions, notifications,
        // `Mcp-Param-*`). The header must say what the body says.
        if !MCPMethod.isModern(version),
            let message = parsed.messages.first(where: { $0.params?.objectValue?["_meta"]?.objectValue?[Self.protocolVersionKey] != nil }),
            message.params?.objectValue?["_meta"]?.objectValue?[Self.protocolVersionKey]?.stringValue != version
        {
            let reason =
                "params._meta carries \(Self.protocolVersionKey), which the MCP-Protocol-Version header "
                + (version.map { "(\($0)) does not match" } ?? "does not carry")
            return .refusing(
                Refusal(
                    status: .badRequest, id: message.id, code: GatewayErrorCode.headerMismatch, message: reason,
                    records: [request.record(.malformed, reason, rule: "header_mismatch", method: message.method)]))
        }
        if let mismatch = headerMismatch(headers, parsed) {
            return .refusing(
                Refusal(
                    status: .badRequest, id: parsed.messages.first?.id, code: GatewayErrorCode.headerMismatch, message: mismatch,
                    records: [request.record(.malformed, mismatch, rule: "header_mismatch")]))
        }
        // Before 2026-07-28, a request outside any session (no `Mcp-Session-Id`, not on a legacy stream) reaches an
        // upstream that cannot tell the tenant's agents apart either: a `notifications/cancelled` naming a request id
        // cancelled another agent's call in flight on such an upstream (found by review). Handled as 2026-07-28 handles
        // every client notification; `notifications/initialized` carries nothing about other calls.
        if !MCPMethod.isModern(version), request.transport != .legacyMessages, request.upstreamSession == nil,
            let message = parsed.messages.first(where: { Self.actsOnOtherCalls($0, version: version) })
        {
            let method = message.method!
            guard !parsed.isBatch else {
                return .refusing(
                    request.malformed(
                        .invalidRequest(
                            "\(method) is not forwarded outside an MCP session (the upstream could not tell whose calls it names); a batch holding it is refused",
                            id: nil)))
            }
            let reason = "\(method): not forwarded outside an MCP session; the upstream would read it as from any of the tenant's agents"
            var acknowledged = Refusal(
                status: .accepted, json: "", records: [request.record(.deny, reason, rule: "protocol", method: method)])
            acknowledged.body = []
            return .refusing(acknowledged)
        }
        // Mcp-Param-* headers exist from 2026-07-28 on; earlier clients never send them and are not asked to.
        if MCPMethod.isModern(version), !parsed.isBatch, let message = parsed.messages.first, message.method == "tools/call",
            let tool = message.params?.objectValue?["name"]?.stringValue,
            let mismatch = services.toolHeaders.mismatch(
                tenant: principal.tenant, tool: tool, arguments: message.params?.objectValue?["arguments"],
                headers: head.headers)
        {
            return .refusing(
                Refusal(
                    status: .badRequest, id: message.id, code: GatewayErrorCode.headerMismatch, message: mismatch,
                    records: [Self.mismatchRecord(request, mismatch, message: message, tool: tool)]))
        }
        let original = body
        var body = body
        var upstreamName: String?
        var ownedTasks: Set<String> = []
        if body.withUnsafeReadableBytes({ TaskHandleRewrite.requestMayCarryHandles(parsed.messages, body: $0) }) {
            switch openTaskHandles(request, parsed, body: body) {
            case .success(let opened): (body, upstreamName, ownedTasks) = (opened.body ?? body, opened.name, opened.tasks)
            case .failure(let refusal): return .failure(.refused(refusal))
            }
        }
        // 2026-07-28 carries trace context in params._meta: the upstream is told the gateway's span there as well.
        if MCPMethod.isModern(version), !parsed.isBatch, let message = parsed.messages.first, message.kind == .request {
            let meta = message.params?.objectValue?["_meta"]?.objectValue
            if !headers.contains(.traceparent), meta?["traceparent"] != nil {
                request.trace = TraceContext.of(headers, meta: meta)
            }
            if let trace = request.trace, let traced = Self.withTraceContext(body, message: message, rewritten: body != original, trace) {
                body = traced
            }
        }
        var decided: [DecidedMessage] = []
        decided.reserveCapacity(parsed.messages.count)
        let now = services.monotonicSeconds
        // What this attempt counted, given back if it is abandoned (to wait for a lease) or a batch is refused after
        // some of its calls were counted. A single call without shared limits needs none.
        let ledger = shared != nil || parsed.isBatch ? RateLimitLedger() : nil
        // Shared buckets some message found nothing on hand for, once per message that needs them. The messages after
        // the first such one are still looked at, so that one fetch brings every bucket the body needs, each sized to
        // the calls it counts (found by review: a batch asked for one bucket, or one token, per attempt, and ran out
        // of attempts inside its limits).
        var missing: [SharedBucket] = []
        for message in parsed.messages {
            do {
                switch try decide(message, principal: principal, protocolVersion: version, now: now, shared: shared, ledger: ledger) {
                case .decided(let item):
                    if item.arguments != nil, let range = item.argumentBytes,
                        !item.decision.logArguments || range.count > AuditRecord.maximumFullArgumentsBytes
                    {
                        item.digestArguments(in: original)
                    }
                    decided.append(item)
                case .mustAsk(let buckets):
                    missing += buckets
                }
            } catch {
                ledger?.giveBack(limiter: services.policy.limiter, store: shared, now: now)
                return .refusing(request.malformed(error, status: error.code == -32601 ? .notFound : .badRequest))
            }
        }
        if !missing.isEmpty {
            // The body is decided again once the store has answered: what this attempt took is given back, and asked
            // for with the rest (a bucket named once per call that counts in it).
            let taken = ledger?.sharedBuckets ?? []
            ledger?.giveBack(limiter: services.policy.limiter, store: shared, now: now)
            // A record per message, for a batch of a sensible size (a huge one gets the request's one record).
            let waiting =
                parsed.messages.count <= Self.maximumWaitingRecords ? parsed.messages.map { waitingRecord($0, request) } : []
            return .failure(.mustAsk(missing + taken, waiting: waiting))
        }
        let survey = DecisionSurvey(decided)
        if let firstRefused = survey.firstRefused {
            ledger?.giveBack(limiter: services.policy.limiter, store: shared, now: now)
            return .refusing(refuse(request, decided, first: decided[firstRefused], isBatch: parsed.isBatch))
        }
        var response = ForwardPlan.ResponseHandling.relay
        var listRequests: [String: ListFilter.Kind] = [:]
        var seenIDs: Set<String> = []
        // Ids matter only where answers are matched to requests: in batches, and for list requests. A single call
        // (the common case) skips this.
        let matchesAnswers = parsed.isBatch || survey.hasListRequest
        for item in matchesAnswers ? decided : [] where item.message.kind == .request {
            guard let id = item.message.id else { continue }
            // Answers are matched to requests by id, so ids must be unambiguous: one spelling per number, none twice.
            guard let key = Self.canonicalID(id), seenIDs.insert(key).inserted else {
                ledger?.giveBack(limiter: services.policy.limiter, store: shared, now: now)
                return .refusing(
                    request.malformed(
                        .invalidRequest("request ids must be strings or plain integers, each used once in a body", id: id)))
            }
            if let method = item.message.method, let kind = ListFilter.Kind(rawValue: method) { listRequests[key] = kind }
        }
        // Legacy messages are answered on the stream (filtered there), and their POST gets only 202; an upstream that
        // answers in the POST's body instead is filtered all the same.
        // The requests whose answers may carry tasks (requests all have ids): they too make the answer filtered.
        let taskRequestIDs = survey.taskRequestIDs
        if !listRequests.isEmpty || !taskRequestIDs.isEmpty { response = .filterLists }
        let renamesListRequests = !listRequests.isEmpty && request.transport != .legacyMessages
        if renamesListRequests {
            let handles = services.sessionHandles
            guard
                let renamed = ListRequestIDs.rewrite(
                    body, lists: listRequests, maximumDepth: services.limits.maximumJSONDepth,
                    seal: { handles.seal(listRequestID: $0, for: principal) })
            else {
                ledger?.giveBack(limiter: services.policy.limiter, store: shared, now: now)
                return .refusing(request.malformed(.parseError("the body could not be read again")))
            }
            body = renamed.body
            seenIDs.subtract(listRequests.keys)
            seenIDs.formUnion(renamed.lists.keys)
            listRequests = renamed.lists
        }
        let records = decided.withUnsafeBufferPointer { items in items.indices.map { record(for: items[$0], request) } }
        var plan = ForwardPlan(records: records, response: response, body: body, isStream: false)
        plan.listRequests = listRequests
        plan.requestIDs = seenIDs
        plan.renamesListRequests = renamesListRequests
        plan.upstreamName = upstreamName
        plan.ownedTasks = ownedTasks
        plan.taskRequestIDs = taskRequestIDs
        plan.isToolCall = survey.hasToolCall
        if let seconds = survey.callTimeoutSeconds { plan.ruleCallTimeout = .seconds(seconds) }
        return .success(plan)
    }

    /// What a body's decisions say as a whole, found in one pass that reads each decision in place (every `for` loop,
    /// `contains` or `map` over the array copies each decision, retaining and releasing every field of it).
    struct DecisionSurvey {
        /// The first decision that refuses its message.
        var firstRefused: Int?
        /// Whether a message asks for a list whose answer is filtered (`ListFilter.Kind`).
        var hasListRequest = false
        /// Whether a message is a `tools/call` request.
        var hasToolCall = false
        /// The longest call deadline a deciding rule sets.
        var callTimeoutSeconds: Int?
        /// The keys (`requestKey`) of the requests whose answers may carry tasks.
        var taskRequestIDs: Set<String> = []

        init(_ decided: [DecidedMessage]) {
            decided.withUnsafeBufferPointer { items in
                for index in items.indices {
                    if firstRefused == nil, !items[index].decision.outcome.permits { firstRefused = index }
                    if let seconds = items[index].decision.callTimeoutSeconds {
                        callTimeoutSeconds = max(callTimeoutSeconds ?? seconds, seconds)
                    }
                    if let method = items[index].message.method {
                        if ListFilter.Kind(rawValue: method) != nil { hasListRequest = true }
                        if items[index].message.kind == .request, method == "tools/call" { hasToolCall = true }
                    }
                    if TaskHandleRewrite.answerMayCarryTasks(items[index].message), let id = items[index].message.id {
                        taskRequestIDs.insert(ExchangeDecisions.requestKey(id))
                    }
                }
            }
        }
    }

    /// The body with the client's task handles replaced by the upstream's task ids (nil: unchanged), the `Mcp-Name`
    /// the upstream gets for a task method, and the task ids opened; a refusal when a handle is not this caller's,
    /// when a task method names no task, or when `tasks/list` is asked where the upstream does not scope tasks to one
    /// caller: outside a session, or from an upstream not known to scope tasks to the session
    /// (`tasksScopedToSession`). Behind the gateway every agent of a tenant is one client to the upstream, and sealing
    /// the ids of such a list would hand this caller every agent's tasks.
    func openTaskHandles(
        _ request: ExchangeRequest, _ parsed: MCPBody, body: ByteBuffer
    ) -> Result<(body: ByteBuffer?, name: String?, tasks: Set<String>), Refusal> {
        let principal = request.principal!
        let handles = services.sessionHandles
        if let list = parsed.messages.first(where: { $0.method == "tasks/list" }) {
            let reason: String? =
                request.upstreamSession == nil
                ? "tasks/list needs an MCP session: without one the upstream cannot scope its list to this caller"
                : !tasksAreTheCallers(request)
                    ? "tasks/list is not answered: the upstream is not configured as scoping tasks to the session (tasks_scoped_to_session), so its list may hold other agents' tasks"
                    : nil
            if let reason {
                return .failure(
                    Refusal(
                        status: .badRequest, id: list.id, code: -32602, message: reason,
                        records: [request.record(.deny, reason, rule: "task_binding", method: "tasks/list")]))
            }
        }
        let value: JSONValue
        do {
            value = try body.withUnsafeReadableBytes { try JSONParser.parse($0) }
        } catch {
            return .failure(request.malformed(.parseError("\(error)")))
        }
        var name: String?
        var tasks: Set<String> = []
        func open(_ message: JSONValue) throws(TaskHandleRewrite.Refused) -> JSONValue? {
            guard let object = message.objectValue else { return nil }
            let opened = try TaskHandleRewrite.opened(object) { handle in
                let task = handles.open(task: handle, for: principal)
                if case .success(let id) = task { tasks.insert(id) }
                return task
            }
            if let method = object["method"]?.stringValue, TaskHandleRewrite.methodsNamingATask.contains(method) {
                name = opened?["params"]?.objectValue?.members.first { TaskHandleRewrite.isTaskIDKey($0.key) }?.value.stringValue
            }
            return opened.map(JSONValue.object)
        }
        do {
            let rewritten: JSONValue?
            if case .array(let messages) = value {
                var changed = false
                var elements: [JSONValue] = []
                for message in messages {
                    let opened = try open(message)
                    changed = changed || opened != nil
                    elements.append(opened ?? message)
                }
                rewritten = changed ? .array(elements) : nil
            } else {
                rewritten = try open(value)
            }
            return .success((rewritten.map { ByteBuffer(bytes: $0.serializedBytes) }, parsed.isBatch ? nil : name, tasks))
        } catch {
            // The same answer whether the handle is another caller's, forged or unreadable: nothing about other
            // callers' tasks is revealed. The record keeps the detail.
            let method = parsed.messages.first { $0.id == error.id && $0.kind == .request }?.method
            return .failure(
                Refusal(
                    status: .badRequest, id: error.id, code: -32602, message: "unknown task",
                    records: [request.record(.deny, error.reason, rule: "task_binding", method: method)]))
        }
    }

    /// Whether every task id the upstream hands out in `request`'s answers is this caller's: the request is in an MCP
    /// session (sealed to the caller; a legacy stream and its messages are one) and the tenant's upstream scopes tasks
    /// to the session.
    func tasksAreTheCallers(_ request: ExchangeRequest) -> Bool {
        let inSession = request.upstreamSession != nil || request.transport == .legacyStream || request.transport == .legacyMessages
        guard inSession, let tenant = request.principal?.tenant else { return false }
        return services.upstream.endpoint(for: tenant)?.tasksScopedToSession ?? false
    }

    /// A 2026-07-28 request with `params._meta.traceparent` (and `tracestate`) set to the gateway's hop; nil when
    /// the message has no object `params._meta` (the envelope check refuses those). Built from the checked message
    /// (whose only members are `jsonrpc`, `id`, `method` and `params`) unless an earlier step rewrote the body.
    static func withTraceContext(_ body: ByteBuffer, message: JSONRPCMessage, rewritten: Bool, _ trace: TraceContext) -> ByteBuffer? {
        var object: JSONObject
        if rewritten {
            guard let parsed = (try? body.withUnsafeReadableBytes { try JSONParser.parse($0) })?.objectValue else { return nil }
            object = parsed
        } else {
            guard let id = message.id, let method = message.method, let params = message.params else { return nil }
            object = JSONObject([
                .init(key: "jsonrpc", value: .string("2.0")), .init(key: "id", value: id), .init(key: "method", value: .string(method)),
                .init(key: "params", value: params),
            ])
        }
        guard object["params"]?.objectValue?["_meta"]?.objectValue != nil else { return nil }
        object = object.updatingObject("params") { params in
            params.updatingObject("_meta") { meta in
                var members = meta.members.filter { $0.key != "traceparent" && $0.key != "tracestate" }
                members.append(.init(key: "traceparent", value: .string(trace.upstreamTraceparent)))
                if let state = trace.state { members.append(.init(key: "tracestate", value: .string(state))) }
                return JSONObject(members)
            }
        }
        return ByteBuffer(bytes: JSONValue.object(object).serializedBytes)
    }

    /// The record of a call refused because a header contradicts its body.
    static func mismatchRecord(_ request: ExchangeRequest, _ reason: String, message: JSONRPCMessage, tool: String) -> AuditRecord {
        var record = request.record(.malformed, reason, rule: "header_mismatch", method: "tools/call")
        record.target = tool
        record.jsonrpcID = message.id
        return record
    }

    /// The id as answers will carry it: a string as is, an integer in its plain decimal form (within ±2^53, where
    /// every JSON reader agrees); nil for other numbers (`1.0`, `1e0`, huge integers), which readers normalise
    /// differently and which could therefore be answered under an id the gateway does not recognise.
    static func canonicalID(_ id: JSONValue) -> String? {
        switch id {
        case .string: return id.serialized
        case .number(let number):
            // `magnitude`, not `abs`: `abs(Int64.min)` traps, and `-9223372036854775808` is a valid id (found by review).
            guard let value = number.int64Value, value.magnitude <= 1 << 53, String(value) == number.literal else {
                return nil
            }
            return number.literal
        default: return nil
        }
    }

    /// A key for a request id that answers are matched by: its canonical form, or else its exact text (an id JSON
    /// readers may spell differently matches only when the upstream gives it back as it came).
    static func requestKey(_ id: JSONValue) -> String { canonicalID(id) ?? "\u{0}" + id.serialized }

    /// `Mcp-Method` / `Mcp-Name` must agree with the body (MCP 2026-07-28); intermediaries check, never trust.
    func headerMismatch(_ headers: RequestHeaderValues, _ parsed: MCPBody) -> String? {
        if parsed.isBatch {
            // Routing headers describe one message; on a batch they would describe none of them truthfully.
            let routing =
                headers.contains(.mcpMethod)
                ? "Mcp-Method" : headers.contains(.mcpName) ? "Mcp-Name" : headers.hasParameterHeaders ? "Mcp-Param-*" : nil
            return routing.map { "the MCP routing header \($0) cannot describe a batch" }
        }
        guard let first = parsed.messages.first else { return nil }
        if let method = headers.first(.mcpMethod), method != first.method {
            return "Mcp-Method header '\(method)' does not match the body's method '\(first.method ?? "")'"
        }
        if let name = headers.first(.mcpName) {
            let decoded = MCPHeaderValue.decode(name)
            let params = first.params?.objectValue
            let bodyName = Self.namedTarget(method: first.method ?? "", params: params)
            // Compared as bytes: Swift `==` is canonical equivalence.
            if !(decoded?.utf8.elementsEqual(bodyName?.utf8 ?? "".utf8) ?? false) || bodyName == nil {
                return "Mcp-Name header does not match the body"
            }
        }
        return nil
    }

    /// What `Mcp-Name` must equal for `method`: the resource's `uri` for the resource methods, the task (the handle the
    /// client was given) for a task method, the `name` for the others (`tools/call`, `prompts/get`). Never the member
    /// of another method: a `resources/read` carrying a `name` beside its `uri` is named by its `uri`, which the policy
    /// decides on.
    static func namedTarget(method: String, params: JSONObject?) -> String? {
        if TaskHandleRewrite.methodsNamingATask.contains(method) { return params?["taskId"]?.stringValue }
        if method.hasPrefix("resources/") { return params?["uri"]?.stringValue }
        return params?["name"]?.stringValue
    }

    /// Why a 2026-07-28 message is refused: it is a response (the version has none from client to server: `-32600`),
    /// or a request that lacks `params._meta` with the protocol version and client capabilities (then
    /// `-32602`), the version agreeing with the `MCP-Protocol-Version` header, and the `Mcp-Method` header — and
    /// `Mcp-Name` for a call that names its target (then `-32020`). Nil when the envelope is complete.
    static func modernEnvelopeProblem(_ message: JSONRPCMessage, _ headers: RequestHeaderValues, version: String) -> MCPRequestError? {
        // The 2026-07-28 HTTP transport has no client-to-server responses (a server asks for input in its result),
        // and its notifications are acknowledged without being forwarded (`decideBody`).
        guard message.kind != .response else {
            return .invalidRequest("protocol version 2026-07-28 has no client-to-server responses", id: nil)
        }
        guard message.kind == .request, let method = message.method else { return nil }
        guard let meta = message.params?.objectValue?["_meta"]?.objectValue else {
            return .invalidParams("params._meta must be an object carrying \(protocolVersionKey) and \(capabilitiesKey)", id: message.id)
        }
        let missing = [protocolVersionKey, capabilitiesKey].filter { meta[$0] == nil }
        if !missing.isEmpty {
            return .invalidParams("params._meta is missing \(missing.joined(separator: ", "))", id: message.id)
        }
        if meta[protocolVersionKey]?.stringValue != version {
            return .headerMismatch("MCP-Protocol-Version header does not match params._meta's protocol version", id: message.id)
        }
        if !headers.contains(.mcpMethod) {
            return .headerMismatch("the Mcp-Method header is missing", id: message.id)
        }
        let named = ["tools/call": "name", "prompts/get": "name", "resources/read": "uri"][method]
        if let named, message.params?.objectValue?[named] != nil, !headers.contains(.mcpName) {
            return .headerMismatch("the Mcp-Name header is missing", id: message.id)
        }
        return nil
    }

    static let protocolVersionKey = "io.modelcontextprotocol/protocolVersion"
    static let capabilitiesKey = "io.modelcontextprotocol/clientCapabilities"

    /// One message decided, or the shared buckets to fetch before it can be.
    enum MessageStep {
        case decided(DecidedMessage)
        case mustAsk([SharedBucket])
    }

    func decide(
        _ message: JSONRPCMessage, principal: Principal, protocolVersion: String?, now: Double,
        shared: (any SharedRateLimits)?, ledger: RateLimitLedger?
    ) throws(MCPRequestError) -> MessageStep {
        guard let method = message.method else {
            return .decided(
                DecidedMessage(message: message, target: nil, arguments: nil, decision: Self.passThrough("response to a server request")))
        }
        if method == "resources/subscribe" {
            return .decided(try subscription(message, principal: principal))
        }
        if method == "subscriptions/listen", let uris = try Self.resourceSubscriptions(of: message) {
            return .decided(listen(message, resources: uris, principal: principal))
        }
        switch MCPMethod.treatment(of: method, protocolVersion: protocolVersion) {
        case .plumbing:
            let passing = Self.passThrough("protocol method \(method)")
            // A plumbing request is counted by the tenant's rate limits that name its method (a notification never is).
            guard message.kind == .request else {
                return .decided(DecidedMessage(message: message, target: nil, arguments: nil, decision: passing))
            }
            let request = PolicyRequest(
                tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: method, target: nil, arguments: nil)
            switch services.policy.count(request, passing: passing, now: now, shared: shared, ledger: ledger) {
            case .decided(let decision):
                return .decided(DecidedMessage(message: message, target: nil, arguments: nil, decision: decision))
            case .mustAsk(let buckets):
                return .mustAsk(buckets)
            }
        case .removed(let version):
            throw .methodNotFound("\(method) was removed in protocol version \(version)", id: message.id)
        case .governed:
            break
        }
        if method == "completion/complete", let refused = try completionRefusal(message, principal: principal) {
            return .decided(refused)
        }
        let (target, arguments, argumentBytes) = try MCPMethod.target(of: message)
        let request = PolicyRequest(
            tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: method, target: target, arguments: arguments
        )
        switch services.policy.decide(request, now: now, shared: shared, ledger: ledger) {
        case .decided(let decision):
            return .decided(
                DecidedMessage(
                    message: message, target: target, arguments: arguments, decision: decision, argumentBytes: argumentBytes))
        case .mustAsk(let buckets):
            return .mustAsk(buckets)
        }
    }

    /// `completion/complete` suggests values for an argument of a prompt or a resource template (`params.ref`), and
    /// such suggestions tell what lies behind them (file names, record ids): besides the policy's own answer for
    /// `completion/complete`, the caller must be one who could use what `ref` names — get the prompt, or read from the
    /// resource template — as the lists show it (`TenantPolicySet.mayCall`). A deny when it could not (nothing is
    /// counted), nil when it could; a `ref` the gateway cannot read, or a member a lenient server would read as one of
    /// its fields, is refused as invalid params.
    func completionRefusal(_ message: JSONRPCMessage, principal: Principal) throws(MCPRequestError) -> DecidedMessage? {
        let needs = #"completion/complete needs params.ref: {"type":"ref/prompt","name":…} or {"type":"ref/resource","uri":…}"#
        let params = message.params?.objectValue
        try MCPMethod.refuseVariants(in: params, of: ["ref"], where: "params", id: message.id)
        guard let ref = params?["ref"]?.objectValue else { throw .invalidParams(needs, id: message.id) }
        try MCPMethod.refuseVariants(in: ref, of: ["type", "name", "uri"], where: "params.ref", id: message.id)
        let kind: ListFilter.Kind
        let key: String
        switch ref["type"]?.stringValue {
        case "ref/prompt": (kind, key) = (.prompts, "name")
        case "ref/resource": (kind, key) = (.resourceTemplates, "uri")
        default: throw .invalidParams(needs, id: message.id)
        }
        guard let name = ref[key]?.stringValue, !name.isEmpty else { throw .invalidParams(needs, id: message.id) }
        try MCPMethod.checkTargetLength(name, key: key, of: message)
        let request = PolicyRequest(
            tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: kind.governedMethod, target: name,
            arguments: nil)
        if services.policy.snapshot.tenants[principal.tenant]?.mayCall(request) ?? false { return nil }
        let what = kind == .prompts ? "prompt" : "resource"
        let decision = PolicyDecision(
            outcome: .deny, rule: "completion_ref", document: "",
            reason: "completion/complete for \(what) \(name): the caller may not use it (\(kind.governedMethod) is denied)", matches: [],
            logArguments: false)
        return DecidedMessage(message: message, target: name, arguments: nil, decision: decision)
    }

    /// `resources/subscribe` tells the caller whether a resource exists and when it changes: it is allowed to whoever
    /// may read the resource, by the policy's answer for `resources/read` of its URI (no rate limit: a subscription is
    /// not a read).
    func subscription(_ message: JSONRPCMessage, principal: Principal) throws(MCPRequestError) -> DecidedMessage {
        try MCPMethod.refuseLenientVariants(in: message)
        guard let uri = message.params?.objectValue?["uri"]?.stringValue, !uri.isEmpty else {
            throw .invalidParams("resources/subscribe needs a string \"uri\"", id: message.id)
        }
        try MCPMethod.checkTargetLength(uri, key: "uri", of: message)
        let read = services.policy.snapshot.evaluate(
            PolicyRequest(
                tenant: principal.tenant, agent: principal.agent, scopes: principal.scopes, method: "resources/read", target: uri,
                arguments: message.params))
        var decision = PolicyDecision(
            outcome: read.outcome, rule: read.rule, document: read.document,
            reason: "resources/subscribe decided as resources/read: \(read.reason)", matches: read.matches, logArguments: false)
        decision.insufficientScopes = read.insufficientScopes
        return DecidedMessage(message: message, target: uri, arguments: nil, decision: decision)
    }

    /// The resource URIs a `subscriptions/listen` request (2026-07-28) asks updates of, in
    /// `params.notifications.resourceSubscriptions`; nil when it asks none. Every spelling a lenient server might read
    /// as that field (case, `_` and `-` ignored: the Python SDK also takes `resource_subscriptions`), in `notifications`
    /// (itself in any such spelling) or directly in `params`, counts. Anything but an array of non-empty strings there (or a `notifications` that is
    /// not an object) is refused: what the gateway cannot read it cannot decide.
    static func resourceSubscriptions(of message: JSONRPCMessage) throws(MCPRequestError) -> [String]? {
        guard let params = message.params?.objectValue else { return nil }
        var places = [params]
        // `notifications` in every spelling a lenient server reads as it (`Notifications`, …): each is read.
        for member in params.members where LenientKey.matches(member.key, "notifications") {
            guard let filter = member.value.objectValue else {
                throw .invalidParams("subscriptions/listen's notifications must be an object", id: message.id)
            }
            places.append(filter)
        }
        var uris: [String] = []
        for place in places {
            for member in place.members where Self.isResourceSubscriptionsKey(member.key) {
                guard let items = member.value.arrayValue else {
                    throw .invalidParams("notifications.resourceSubscriptions must be an array of resource URIs", id: message.id)
                }
                for item in items {
                    guard let uri = item.stringValue, !uri.isEmpty else {
                        throw .invalidParams("notifications.resourceSubscriptions must hold only non-empty URI strings", id: message.id)
                    }
                    try MCPMethod.checkTargetLength(uri, key: "uri", of: message)
                    uris.append(uri)
                }
            }
        }
        return uris.isEmpty ? nil : uris
    }

    /// Whether `key` reads as `resourceSubscriptions` with case, `_` and `-` ignored.
    static func isResourceSubscriptionsKey(_ key: String) -> Bool {
        LenientKey.matches(key, "resourcesubscriptions")
    }

    /// `subscriptions/listen` with resource subscriptions is the 2026-07-28 form of `resources/subscribe`: each URI is
    /// decided as the `resources/read` of it would be (`ListFilter.readRequest`: the same arguments, no rate limit),
    /// and the request is refused with the first URI the caller may not read. The other notifications it may ask for
    /// (list changes) stay plumbing. The URIs are recorded as the decision's arguments.
    func listen(_ message: JSONRPCMessage, resources uris: [String], principal: Principal) -> DecidedMessage {
        var rules: [String] = []
        var document = ""
        var outcome = PolicyDecision.Outcome.allow
        var matches: [PolicyDecision.RuleMatch] = []
        let snapshot = services.policy.snapshot
        for uri in uris {
            let read = snapshot.evaluate(ListFilter.readRequest(uri, principal: principal))
            guard read.outcome.permits else {
                var decision = PolicyDecision(
                    outcome: read.outcome, rule: read.rule, document: read.document,
                    reason: "subscriptions/listen's resource subscription decided as resources/read: \(read.reason)", matches: read.matches,
                    logArguments: false)
                decision.insufficientScopes = read.insufficientScopes
                return DecidedMessage(message: message, target: uri, arguments: nil, decision: decision)
            }
            if read.outcome == .audit { outcome = .audit }
            if rules.isEmpty { document = read.document }
            if !rules.contains(read.rule) { rules.append(read.rule) }
            if matches.count < 16 { matches.append(contentsOf: read.matches.prefix(16 - matches.count)) }
        }
        let named = rules.prefix(4).joined(separator: ", ") + (rules.count > 4 ? " and \(rules.count - 4) more" : "")
        let decision = PolicyDecision(
            outcome: outcome, rule: rules[0], document: document,
            reason: "subscriptions/listen: \(uris.count) resource subscription(s) decided as resources/read, allowed by \(named)",
            // Logged in full only as far as any call's arguments are: the bound is on their bytes in the body (`params`).
            matches: matches, logArguments: message.paramsBytes != nil)
        let subscribed = JSONValue.object(
            JSONObject([.init(key: "resourceSubscriptions", value: .array(uris.map(JSONValue.string)))]))
        return DecidedMessage(
            message: message, target: uris.count == 1 ? uris[0] : nil, arguments: subscribed, decision: decision,
            argumentBytes: message.paramsBytes)
    }

    static func passThrough(_ reason: String) -> PolicyDecision {
        PolicyDecision(
            outcome: .allow, rule: "protocol", document: "", reason: "\(reason): forwarded without a policy decision", matches: [],
            logArguments: false)
    }

    func record(
        for item: DecidedMessage, _ request: ExchangeRequest, decisionOverride: (AuditRecord.Decision, String)? = nil
    ) -> AuditRecord {
        let outcome: AuditRecord.Decision
        switch item.decision.outcome {
        case .allow: outcome = .allow
        case .audit: outcome = .audit
        case .deny: outcome = .deny
        case .rateLimited: outcome = .rateLimited
        case .limitsUnavailable: outcome = .unavailable
        }
        // Overridden (a message its policy allowed, refused with its batch): the rule is the batch's, not the allow rule
        // (a deny under an allow rule would read as that rule denying, in records and metrics); the reason names both.
        // In full where the rule asks, up to a bound: a record is one line a log shipper must take, and room for it is
        // reserved while the call is in flight.
        let inFull = item.decision.logArguments && (item.argumentBytes?.count ?? 0) <= AuditRecord.maximumFullArgumentsBytes
        var reason = decisionOverride?.1 ?? item.decision.reason
        if item.decision.logArguments && !inFull {
            reason += "; arguments over \(AuditRecord.maximumFullArgumentsBytes / 1024) KiB are logged as keys and SHA-256"
        }
        return request.record(
            decisionOverride?.0 ?? outcome, reason, rule: decisionOverride == nil ? item.decision.rule : "batch",
            method: item.message.method ?? "response", target: item.target, jsonrpcID: item.message.id,
            arguments: inFull ? item.arguments.map { .full($0) } : AuditRecord.redacted(item.arguments, digest: item.argumentDigest),
            sharedLimits: item.decision.sharedLimitsNote?.rawValue)
    }

    /// Most messages of one body recorded one by one when it is abandoned waiting for a lease.
    static let maximumWaitingRecords = 1000

    /// The record of `message` should its body be abandoned while it waits for a shared rate-limit lease (the reason is
    /// completed then with the cause).
    func waitingRecord(_ message: JSONRPCMessage, _ request: ExchangeRequest) -> AuditRecord {
        var record = request.record(.unavailable, "not decided", rule: "abandoned", method: message.method ?? "response")
        record.jsonrpcID = message.id
        if message.kind == .request || message.kind == .notification, let target = try? MCPMethod.target(of: message).target {
            record.target = target
        }
        return record
    }

    /// Nothing of a body with a refused message is forwarded. Requests get JSON-RPC errors (a batch: one per
    /// request), notifications only an HTTP status.
    func refuse(_ request: ExchangeRequest, _ decided: [DecidedMessage], first: DecidedMessage, isBatch: Bool) -> Refusal {
        var records: [AuditRecord] = []
        for item in decided {
            if item.decision.outcome.permits {
                records.append(
                    record(
                        for: item, request,
                        decisionOverride: (
                            .deny,
                            "batch refused: another message in it was refused (\(first.decision.rule)); this one alone was allowed by \(item.decision.rule)"
                        )))
            } else {
                records.append(record(for: item, request))
            }
        }
        var retryAfter: Double?
        var storeUnavailable = false
        for item in decided where !item.decision.outcome.permits {
            if case .rateLimited(let wait) = item.decision.outcome { retryAfter = max(retryAfter ?? 0, wait) }
            if item.decision.outcome == .limitsUnavailable { storeUnavailable = true }
        }
        // Shared limits out of reach (the tenant fails closed): 503, and a retry soon may find them back.
        if storeUnavailable { retryAfter = max(retryAfter ?? 0, 1) }
        // Whole seconds, at least 1, and bounded: a limit of one call in centuries gives a wait no integer holds.
        var headers = retryAfter.map { [("Retry-After", String(max(1, Int(min($0.rounded(.up), Self.maximumRetryAfter)))))] } ?? []
        // Refused only for want of scopes (every refused message): the OAuth step-up answer, 403 with the scopes.
        let refused = decided.filter { !$0.decision.outcome.permits }
        var neededScopes: [String] = []
        if retryAfter == nil, refused.allSatisfy({ !$0.decision.insufficientScopes.isEmpty }) {
            for scope in refused.flatMap(\.decision.insufficientScopes) where !neededScopes.contains(scope) { neededScopes.append(scope) }
            headers.append(insufficientScope(neededScopes, tenant: request.pathTenant ?? request.principal?.tenant))
        }
        let errors = decided.filter { $0.message.kind == .request }.map { item in
            Self.errorObject(
                id: item.message.id, for: item.decision.outcome.permits ? first.decision : item.decision,
                batchNote: item.decision.outcome.permits)
        }
        if errors.isEmpty {
            // Only notifications/responses: no JSON-RPC response may be sent.
            let body = JSONValue.object(
                JSONObject([
                    .init(
                        key: "error",
                        value: .string(
                            storeUnavailable ? "rate limits unavailable" : retryAfter != nil ? "rate limited" : "denied by policy")),
                    .init(key: "rule", value: .string(first.decision.rule)),
                    .init(key: "reason", value: .string(first.decision.reason)),
                ])
            ).serialized
            let status: HTTPResponseStatus = storeUnavailable ? .serviceUnavailable : retryAfter != nil ? .tooManyRequests : .forbidden
            var refusal = Refusal(status: status, json: body, headers: headers, records: records)
            refusal.answersNoMessage = true
            return refusal
        }
        let payload = isBatch ? JSONValue.array(errors).serialized : errors[0].serialized
        let status: HTTPResponseStatus =
            storeUnavailable ? .serviceUnavailable : retryAfter != nil ? .tooManyRequests : neededScopes.isEmpty ? .ok : .forbidden
        return Refusal(status: status, json: payload, headers: headers, records: records)
    }

    /// The longest `Retry-After` the gateway writes (about 31 years, as the shared buckets' script caps its wait).
    static let maximumRetryAfter = 1e9

    static func errorObject(id: JSONValue?, for decision: PolicyDecision, batchNote: Bool) -> JSONValue {
        var code = GatewayErrorCode.policyDenied
        var message = "denied by policy: \(decision.reason)"
        var data: [JSONObject.Member] = [
            .init(key: "rule", value: .string(decision.rule)), .init(key: "reason", value: .string(decision.reason)),
        ]
        if case .rateLimited(let wait) = decision.outcome {
            code = GatewayErrorCode.rateLimited
            message = "rate limited: \(decision.reason)"
            data.append(
                .init(
                    key: "retry_after_seconds",
                    value: JSONNumber((min(wait, maximumRetryAfter) * 1000).rounded(.up) / 1000).map(JSONValue.number) ?? .null))
        }
        if decision.outcome == .limitsUnavailable {
            code = GatewayErrorCode.sharedLimitsUnavailable
            message = "rate limits unavailable: \(decision.reason)"
        }
        if !decision.insufficientScopes.isEmpty {
            data.append(.init(key: "required_scopes", value: .array(decision.insufficientScopes.map(JSONValue.string))))
        }
        if batchNote { message = "not forwarded: another message in the batch was refused (\(decision.rule))" }
        return .object(
            JSONObject([
                .init(key: "jsonrpc", value: .string("2.0")),
                .init(key: "id", value: id ?? .null),
                .init(
                    key: "error",
                    value: .object(
                        JSONObject([
                            .init(key: "code", value: .number(JSONNumber(Int64(code)))),
                            .init(key: "message", value: .string(message)),
                            .init(key: "data", value: .object(JSONObject(data))),
                        ]))),
            ]))
    }
}

extension Result where Success == ForwardPlan, Failure == ExchangeDecisions.NotForwarded {
    /// A refusal of the body.
    static func refusing(_ refusal: Refusal) -> Self { .failure(.refused(refusal)) }
}

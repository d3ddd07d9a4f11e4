import AsyncHTTPClient
import Identity
import NIOCore
import NIOHTTP1
import Policy
import StrictJSON

extension MCPExchange {
    /// Request headers passed to the upstream. Everything else — `Authorization`, cookies, `Host`, forwarding and
    /// hop-by-hop headers, any header claiming an identity — stays at the gateway.
    static let forwardedRequestHeaders = ["accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"]
    /// Response headers passed back to the client.
    static let forwardedResponseHeaders = ["content-type", "mcp-session-id", "cache-control", "mcp-protocol-version", "retry-after"]

    /// Forwards the exact bytes that were parsed and decided, then streams the upstream's answer back.
    func forward(_ decided: [Decided], principal: Principal) async {
        let response = await upstreamResponse(principal: principal, body: body, recordCount: decided.count) { status, reason in
            decided.map { item in
                var entry = record(for: item, principal: principal)
                entry.upstreamStatus = status
                if let reason { entry.reason += "; upstream: \(reason)" }
                return entry
            }
        }
        guard let response else { return }
        if decided.count == 1, decided[0].message.method == "initialize", let session = response.headers.first(name: "mcp-session-id") {
            services.sessions.bind(session, to: "\(principal.tenant)/\(principal.agent)")
        }
        if decided.count == 1, decided[0].message.method == "tools/list", decided[0].message.kind == .request {
            return await relayFilteredToolList(response, principal: principal)
        }
        await relay(response)
    }

    /// GET (server stream) and DELETE (end of session): authenticated, audited, forwarded.
    func passThrough(method: String) async {
        guard let principal = await authenticate(), await checkSession(principal) else { return }
        if let repeated = Self.singleValuedHeaders.first(where: { head.headers[$0].count > 1 }) {
            return await refuseMalformed(.invalidRequest("header \(repeated) appears more than once", id: nil), principal: principal)
        }
        if head.method == .GET, !(head.headers.first(name: "accept")?.contains("text/event-stream") ?? false) {
            var record = baseRecord(.malformed, "GET without Accept: text/event-stream", principal: principal)
            record.rule = "accept"
            guard await audit([record]) else { return }
            return await sendJSON(status: .notAcceptable, json: #"{"error":"GET needs Accept: text/event-stream"}"#)
        }
        let response = await upstreamResponse(principal: principal, body: nil, recordCount: 1) { status, reason in
            var record = baseRecord(.allow, "\(method): forwarded without a policy decision" + (reason.map { "; upstream: \($0)" } ?? ""), principal: principal)
            record.method = method
            record.rule = "protocol"
            record.upstreamStatus = status
            return [record]
        }
        guard let response else { return }
        if head.method == .DELETE, (200..<300).contains(Int(response.status.code)), let session = head.headers.first(name: "mcp-session-id") {
            services.sessions.unbind(session)
        }
        await relay(response)
    }

    /// Sends the request upstream and audits the outcome once the status is known. Room for the records is reserved
    /// before anything is forwarded: when the audit log cannot promise it, the client gets 503 and the upstream
    /// nothing. Nil when the request was not forwarded or failed (the client has been answered).
    func upstreamResponse(
        principal: Principal, body: [UInt8]?, recordCount: Int, records: (Int, String?) -> [AuditRecord]
    ) async -> HTTPClientResponse? {
        // An estimate, not the records themselves (they are built once, after the upstream answered): a record is
        // well under 1 KiB plus its arguments, which can never exceed the body. The room is a soft promise: a longer
        // record still goes in.
        let estimate = recordCount * 1024 + (body?.count ?? 0)
        let reservation: AuditLog.Reservation
        do {
            reservation = try services.audit.reserve(bytes: estimate)
        } catch {
            await sendJSONRPCError(status: .serviceUnavailable, id: nil, code: GatewayErrorCode.auditUnavailable,
                                   message: "audit log unavailable; request refused", data: nil)
            return nil
        }
        guard let upstream = services.upstreams[principal.tenant] else {
            services.audit.append(records(502, "no upstream configured for tenant"), into: reservation)
            await sendJSONRPCError(status: .badGateway, id: nil, code: GatewayErrorCode.upstreamUnavailable,
                                   message: "no upstream is configured for this tenant", data: nil)
            return nil
        }
        var request = HTTPClientRequest(url: upstream.url)
        request.method = head.method
        for name in Self.forwardedRequestHeaders {
            for value in head.headers[name] { request.headers.add(name: name, value: value) }
        }
        if let header = upstream.credentialHeader, let value = upstream.credentialValue { request.headers.replaceOrAdd(name: header, value: value) }
        if let body {
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await services.httpClient.execute(request, deadline: .now() + TimeAmount(services.limits.upstreamTimeout))
            services.audit.append(records(Int(response.status.code), nil), into: reservation)
            return response
        } catch {
            let timedOut = (error as? HTTPClientError) == .deadlineExceeded || (error as? HTTPClientError) == .connectTimeout
            let status: HTTPResponseStatus = timedOut ? .gatewayTimeout : .badGateway
            // The client learns only that the upstream failed, never its address or the transport error.
            services.audit.append(records(Int(status.code), timedOut ? "timed out" : "\(error)"), into: reservation)
            await sendJSONRPCError(status: status, id: nil, code: GatewayErrorCode.upstreamUnavailable,
                                   message: timedOut ? "upstream did not answer in time" : "upstream unavailable", data: nil)
            return nil
        }
    }

    /// Streams the upstream response back as it arrives: every chunk is flushed at once, so SSE events pass one by
    /// one; when the client's channel stops being writable the task waits, so a slow client slows the upstream
    /// instead of filling memory.
    func relay(_ response: HTTPClientResponse) async {
        var headers = HTTPHeaders()
        for name in Self.forwardedResponseHeaders {
            for value in response.headers[name] { headers.add(name: name, value: value) }
        }
        if let length = response.headers.first(name: "content-length") {
            headers.add(name: "Content-Length", value: length)
        } else if response.status != .accepted && response.status != .noContent {
            headers.add(name: "Transfer-Encoding", value: "chunked")
        } else {
            headers.add(name: "Content-Length", value: "0")
        }
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        do {
            channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers)), promise: nil)
            for try await chunk in response.body {
                // Every chunk is flushed at once (SSE events are never held back). The task waits for the write
                // only when the client is not keeping up: that is the backpressure, without a round trip per chunk.
                guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
                if channel.isWritable {
                    channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(chunk)), promise: nil)
                } else {
                    try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(chunk))).get()
                }
            }
            try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
            if !head.isKeepAlive { try? await channel.close() }
        } catch {
            // The client went away or the upstream broke mid-stream: the HTTP framing is lost, so close.
            try? await channel.close()
        }
    }

    /// `tools/list` answers list only the tools this caller may call (JSON responses, and SSE events carrying the
    /// response). Buffered up to a bound; a larger list is refused rather than passed unfiltered.
    func relayFilteredToolList(_ response: HTTPClientResponse, principal: Principal) async {
        let contentType = response.headers.first(name: "content-type")?.lowercased() ?? ""
        guard response.status == .ok, contentType.hasPrefix("application/json") || contentType.hasPrefix("text/event-stream") else {
            return await relay(response)
        }
        let limit = services.limits.maximumFilteredResponseBytes
        let timeout = services.limits.upstreamTimeout
        // Bounded in size and in time: an upstream that keeps a tools/list stream open cannot hold the exchange.
        let outcome: ByteBuffer?? = await withTaskGroup(of: ByteBuffer??.self) { group in
            group.addTask { .some(try? await response.body.collect(upTo: limit)) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return .none
            }
            let first = await group.next() ?? .none
            group.cancelAll()
            return first
        }
        guard case .some(let finished) = outcome else {
            return await sendJSONRPCError(status: .gatewayTimeout, id: nil, code: GatewayErrorCode.upstreamUnavailable,
                                          message: "upstream did not finish its tools/list answer in time", data: nil)
        }
        guard let collected = finished else {
            return await sendJSONRPCError(status: .badGateway, id: nil, code: GatewayErrorCode.upstreamUnavailable,
                                          message: "tools/list response larger than \(limit) bytes", data: nil)
        }
        let filter = ToolListFilter(snapshot: services.policy.snapshot, principal: principal)
        let text = String(buffer: collected)
        guard let filtered = contentType.hasPrefix("application/json") ? filter.filterJSON(text) : filter.filterEventStream(text) else {
            // What cannot be read cannot be filtered; passing it on could show tools the caller may not call.
            return await sendJSONRPCError(status: .badGateway, id: nil, code: GatewayErrorCode.upstreamUnavailable,
                                          message: "upstream tools/list response is not valid JSON-RPC", data: nil)
        }
        var headers = HTTPHeaders()
        for name in Self.forwardedResponseHeaders {
            for value in response.headers[name] { headers.add(name: name, value: value) }
        }
        let bytes = ByteBuffer(string: filtered)
        headers.add(name: "Content-Length", value: String(bytes.readableBytes))
        await send(status: .ok, headers: headers, body: bytes)
    }
}

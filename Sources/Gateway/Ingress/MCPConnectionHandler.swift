import Identity
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON
import TLS

/// The handler at the top of every client connection. It frames the client's bytes into requests itself
/// (`RequestFraming`) and encodes its responses itself (`ClientResponseEncoder`): one pipeline step fewer each way
/// for every part of every exchange than a decoder and an encoder of their own. It feeds the
/// parts, upstream responses and the results of off-loop work into the connection's `ExchangeStateMachine`, and
/// performs the actions it returns. Everything runs on the connection's event loop; only a fresh signature check and
/// the decision on a large body leave it (on the shared thread pool) and come back.
final class MCPConnectionHandler: ChannelDuplexHandler, UpstreamResponseReceiver {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = ByteBuffer

    private let services: GatewayServices?
    private let decisions: ExchangeDecisions?
    private let deadlines: ClientDeadlines
    /// Frames and encodes the responses (called directly; not a pipeline step).
    private let responseEncoder = ClientResponseEncoder()
    private var machine: ExchangeStateMachine
    /// The client's requests, framed from its bytes (RFC 9112); nothing is framed after a framing error.
    private var framing: RequestFraming
    /// Keeps the parts of a read in order when a read or the close arrives while they are handled.
    private let relay = FramedPartsRelay<HTTPServerRequestPart>()
    private var context: ChannelHandlerContext?
    /// The channel's allocator, taken once (asked through the channel, it is a call through the channel's existential
    /// and an event-loop check each time): for the responses and for the requests this connection forwards.
    private var allocator = ByteBufferAllocator()
    private var handshake: TLSHandshakeCompleted?
    private var clientAddress: String?
    /// The client's address when the connection is a load balancer's that named it (PROXY protocol); nil: the peer's.
    private let client: SocketAddress?
    /// The client's source for per-source shares (`ClientSource`).
    private var source = "unknown"

    // The exchange in progress.
    private var request: ExchangeRequest?
    private var plan: ForwardPlan?
    private var reservation: AuditLog.Reservation?
    /// A call's relayed answer that has begun (its status, and when its head came): its records are written when the
    /// answer ends, saying whether it was relayed whole (found by review: an SSE answer cut short by the client or a
    /// shutdown was recorded as answered, the record written at its head). Streams are recorded at their head.
    private var answerBegun: (status: Int, at: NIODeadline)?
    /// Filters list results out of an SSE answer as it streams (POST answers with list requests, and GET streams).
    private var eventFilter: SSEEventFilter?
    /// The legacy stream this connection relays, as registered in `LegacyStreams`.
    private var legacyRegistration: (endpoint: String, owner: String, token: UInt64)?
    /// The records of a body waiting for shared rate-limit leases, written if it is abandoned meanwhile.
    private var waitingRecords: [AuditRecord] = []
    /// Whether a refusal that ends the connection was recorded (then a request cut short needs no second record).
    private var connectionRefusalRecorded = false
    private var heldBudgets: [UpstreamBudgets.Budget] = []
    /// Bytes this exchange holds of an answer seen whole (`HeldBytes`), and the tenant they count against.
    private var heldBytes = 0
    private var heldTenant = ""
    /// The message being forwarded holds notifications and responses only: a refusal of it answers no request.
    private var forwardsNoRequests = false
    /// Bytes of this exchange's request body counted against `GatewayServices.receivingBodies`, and the tenant.
    private var chargedBodyBytes = 0
    private var chargedBodyTenant = ""
    private var upstream: UpstreamConnection?
    /// Bumped for every request, so results of off-loop work for an earlier one are recognised and dropped.
    private var generation = 0

    private var flushPending = false
    /// Bounds the time a list answer may take to arrive whole.
    private var collectTimer: Scheduled<Void>?
    /// Whether the exchange relays a listening stream (a GET stream, the legacy SSE stream, `subscriptions/listen`):
    /// its caller's credentials are checked again while it lasts.
    private var listeningStream = false
    /// Ends a listening stream when its caller's credentials expire.
    private var credentialsTimer: Scheduled<Void>?
    /// The held bytes a large SSE event about to be written takes (`chargedEventWriteBytes`), given back once written.
    private var eventWriteCharge: (bytes: Int, tenant: String)?
    /// Smallest SSE event whose write is counted in held bytes.
    static let chargedEventWriteBytes = 64 * 1024
    /// Tells the decision thread's job that its result is no longer wanted.
    private var offloadCancellation: OffloadCancellation?
    /// Whether a collected list answer is being filtered on the decision threads (its result is still wanted).
    private var filteringOffLoop = false
    /// A large SSE event being filtered on the decision threads: the upstream's reading is paused meanwhile, and what
    /// still arrives (and the end) waits here, in order.
    private var eventOffload: EventOffload?
    private var closing = false
    /// A request came after the connection started closing: it and everything after it are dropped.
    private var discardingAfterClose = false
    private var pausedForAuthentication = false
    private var pausedForPipelining = false
    /// Parts of pipelined requests that arrived while an earlier request was being handled.
    private var pipelined = CircularBuffer<HTTPServerRequestPart>(initialCapacity: 2)
    /// How many of `pipelined` are heads (requests).
    private var pipelinedHeads = 0
    /// Answers to requests without credentials (refusals, and the OAuth metadata) on this connection since its last
    /// authenticated request.
    private var unauthenticatedAnswers = 0
    /// The most answers to requests without credentials in a row one connection gets before it is closed.
    static let maximumUnauthenticatedAnswers = 16
    private var readPending = false
    private var draining = false
    /// What follows the request in flight cannot be read as HTTP: the connection closes once that exchange is over.
    private var unreadableRest = false
    /// Whether the connection closes after the exchange in flight (the gateway shuts down, or nothing after it can be
    /// framed).
    private var closesAfterExchange: Bool { draining || unreadableRest }

    /// The listener's TLS contexts, this connection's TLS handler, and the contexts' generation its handshake was
    /// verified against (a connection open across a reload of the trust has its client certificate checked again).
    struct TLSTrust {
        let contexts: TLSContextStore
        let handler: TLSHandler
        var generation: Int
    }

    private var tlsTrust: TLSTrust?

    /// A handler for one client connection, framing request heads of at most `maximumHeadBytes`.
    init(
        services: GatewayServices?, deadlines: ClientDeadlines, maximumHeadBytes: Int, tlsTrust: TLSTrust? = nil,
        client: SocketAddress? = nil
    ) {
        self.client = client
        self.framing = RequestFraming(maximumHeadBytes: maximumHeadBytes)
        self.tlsTrust = tlsTrust
        self.services = services
        self.decisions = services.map(ExchangeDecisions.init)
        self.deadlines = deadlines
        let limits = services?.limits ?? GatewayLimits()
        machine = ExchangeStateMachine(
            limits: .init(
                maximumBodyBytes: limits.maximumBodyBytes, preAuthenticationBodyBytes: limits.preAuthenticationBodyBytes,
                maximumCollectedBytes: limits.maximumFilteredResponseBytes))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        allocator = context.channel.allocator
        responseEncoder.allocator = allocator
        let address = client ?? context.channel.remoteAddress
        clientAddress = address?.hostAndPort
        source = ClientSource.key(address)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        responseEncoder.dropPending()
        self.context = nil
    }

    /// A connection with a client certificate that outlived a reload of the TLS trust (a CRL that revokes it, its CA
    /// removed): its certificate is verified again against the trust in force, so each request is decided as a new
    /// connection's would be. One atomic read per request otherwise.
    private func recheckClientCertificateAfterReload() {
        guard handshake?.peerCertificate != nil, let trust = tlsTrust else { return }
        let generation = trust.contexts.generation
        guard generation != trust.generation else { return }
        tlsTrust!.generation = generation
        if let rechecked = trust.handler.handshakeRechecked(against: trust.contexts.current) { handshake = rechecked }
    }

    /// A listening stream's caller is checked again when the TLS trust or the identity is reloaded, or a fetched
    /// signing key is withdrawn: a client certificate that no longer verifies (revoked, expired, its CA removed), or
    /// credentials that no longer authenticate as the same caller (a JWT key removed), end the stream at once, not at
    /// its next request. (A token that needs introspection is not asked about again here.)
    private func recheckListeningStream() {
        guard listeningStream, !closing, case .relaying = machine.state else { return }
        recheckClientCertificateAfterReload()
        if let refusal = handshake?.peerCertificateRefusal {
            let name = handshake?.refusedPeerCertificate.map { " (serial \($0.serialNumber), subject \($0.subject))" } ?? ""
            endStream("stream ended: \(refusal)\(name)", rule: "certificate_refused", decision: .authenticationFailed)
            return
        }
        guard let services, let decisions, let request, let caller = request.principal else { return }
        if services.introspector != nil, case .success(let token?) = ExchangeDecisions.bearerToken(request.headers),
            TokenIntrospector.isOpaque(token)
        {
            // Introspected, not verified here (asking again would take a round trip to the authorization server); but a
            // stream of a tenant a reload removed ends (found by review).
            if !services.authenticator.tenants.contains(caller.tenant) {
                endStream(
                    "stream ended: tenant \(caller.tenant) is no longer configured", rule: "credentials_refused",
                    decision: .authenticationFailed)
            }
            return
        }
        switch decisions.authenticate(request) {
        case .success(let principal)? where principal.tenant != caller.tenant || principal.agent != caller.agent:
            endStream(
                "stream ended: the caller's credentials now authenticate as \(principal.tenant)/\(principal.agent)",
                rule: "credentials_refused", decision: .authenticationFailed)
        case .failure(let refusal)?:
            let why = refusal.records.first?.reason ?? "credentials refused"
            endStream(
                "stream ended: the caller's credentials are no longer accepted: \(why)", rule: "credentials_refused",
                decision: .authenticationFailed)
        case .success?, nil:
            break
        }
    }

    /// Watches a listening stream now relayed: it ends when its caller's credentials stop being accepted (token `exp`
    /// plus leeway, certificate `notAfter`), as its next request would be refused then.
    private func startListening(_ principal: Principal, context: ChannelHandlerContext) {
        listeningStream = true
        guard let expiry = principal.acceptedUntil else { return }
        let generation = self.generation
        // At most a year ahead (a timer amount must not overflow); a stream that long is ended by other bounds first.
        let seconds = min(max(0, expiry.timeIntervalSinceNow), 366 * 86_400)
        credentialsTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) { [self] in
            guard generation == self.generation, listeningStream, case .relaying = machine.state else { return }
            endStream(
                "stream ended: the caller's credentials are not accepted after \(AuditRecord.timestamp(expiry))",
                rule: "credentials_expired",
                decision: .authenticationFailed)
        }
    }

    private func endListening() {
        listeningStream = false
        credentialsTimer?.cancel()
        credentialsTimer = nil
    }

    // MARK: - Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.read(
            unwrapInboundIn(data), frame: { self.framing.feed($0, $1) }, fire: { self.take($0) },
            fail: { self.framingFailed($0, context: context) }, close: { self.connectionClosed(context: context) })
    }

    /// A part of a request, as framed.
    private func take(_ part: HTTPServerRequestPart) {
        // Once the connection is closing, no new exchange starts: a request that comes now is dropped, as bytes after
        // a request that asked to close are (requests queued before are recorded as abandoned when it closes).
        if closing && (part.isHead || discardingAfterClose) {
            discardingAfterClose = true
            return
        }
        // A pipelined request waits (with reading paused) until the one before it has been answered, and until the
        // client takes what it was answered: answers the gateway gives at once (refusals, /healthz) must not pile up
        // for a client that does not read (found by review: 21-byte requests, answered ten thousand times over per
        // connection, held 1.8 MB each).
        if !pipelined.isEmpty || (part.isHead && (machine.state != .idle || context?.channel.isWritable == false)) {
            if part.isHead {
                pipelinedHeads += 1
                if pipelinedHeads > Self.maximumPipelinedRequests {
                    discardingAfterClose = true
                    recordConnectionRefusal(
                        "more than \(Self.maximumPipelinedRequests) pipelined requests waiting for their turn", rule: "pipeline_depth")
                    close()
                    return
                }
            }
            pipelined.append(part)
            pausedForPipelining = true
            return
        }
        handle(part)
    }

    /// The most requests that may wait behind the one in flight (what one read brings beyond is refused and the
    /// connection closed).
    static let maximumPipelinedRequests = 64

    private func handle(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            requestHead(head)
        case .body(let part):
            deadlines.bodyBytesReceived(part.readableBytes)
            if case .receivingBody = machine.state, !chargeBody(upTo: machine.receivedBodyBytes + part.readableBytes) {
                return refuseReceivingBody()
            }
            perform(machine.requestBody(part))
        case .end:
            deadlines.bodyReceived()
            if case .draining = machine.state {
                // The answer went out before the body was read; with the body drained the exchange is over.
                _ = machine.requestEnd()
                if case .idle = machine.state { exchangeFinished() }
            } else {
                perform(machine.requestEnd())
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        // A client that does not read its answers is not read from either: requests answered at once (refusals,
        // /healthz) cannot pile answers up in the gateway's memory.
        // A connection that is closing reads on (what it reads is dropped), so that the client's close is seen.
        if (!closing && (pausedForAuthentication || pausedForPipelining)) || !context.channel.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // After the parts of a read being handled now, if any: the close never comes between a head and its body.
        relay.closed { connectionClosed(context: context) }
    }

    private func connectionClosed(context: ChannelHandlerContext) {
        relay.close(
            frame: { self.framing.closed($0) }, fire: { self.take($0) }, fail: { self.framingFailed($0, context: context) })
        collectTimer?.cancel()
        collectTimer = nil
        stopOffloadedFiltering()
        endListening()
        // The event filter's endpoint rewriting refers back to this handler: dropped, or the two keep each other.
        eventFilter = nil
        unregisterLegacyStream()
        recordUndecided()
        perform(machine.clientClosed())
        finishAudit(
            status: answerBegun?.status,
            note: "not completed: \(closeCause)\(answerBegun != nil ? " before the whole answer was relayed" : "")",
            answeredAt: answerBegun?.at)
        recordQueuedRequests()
        releaseBudgets()
        releaseHeldBytes()
        releaseBodyCharge()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // A client that does not read slows the upstream instead of filling the gateway's memory.
        upstream?.setReading(context.channel.isWritable && eventOffload == nil, for: self)
        if context.channel.isWritable {
            if !pipelined.isEmpty, case .idle = machine.state { handlePipelined() }
            resumeReadsIfPossible()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSHandshakeCompleted {
            handshake = event
        } else if event is TrustReloaded {
            recheckListeningStream()
            return
        } else if event is GatewayDraining {
            draining = true
            if case .idle = machine.state { close() }
            return
        } else if event is ConnectionIdle {
            // Idle means no bytes either way; a quiet stream being relayed is not idle. A client that takes none of what
            // waits for it (the socket stays unwritable, so relaying has stopped) is: it would hold its request, its
            // upstream connection and its tenant's budgets for as long as it liked (found by review: four stalled
            // readers of a large answer held a tenant's whole request budget).
            if case .idle = machine.state {
                close()
            } else if !context.channel.isWritable {
                endStream("the client read none of the answer for the idle timeout", rule: "slow_reader", decision: .unavailable)
            }
            return
        } else if let slow = event as? SlowClientDetected, slow == .answerTooSlow {
            // Found by review (and left until now): a client reading a large answer at a trickle held it for good.
            let rate = services?.limits.minimumAnswerBytesPerSecond ?? 0
            if case .idle = machine.state {
                close()
            } else {
                endStream("the client took the answer slower than \(rate) bytes/s", rule: "slow_reader", decision: .unavailable)
            }
            return
        } else if let slow = event as? SlowClientDetected {
            let reason = slow == .headTimeout ? "request head not received in time" : "request body arrived too slowly"
            recordConnectionRefusal(reason, rule: slow == .headTimeout ? "slow_request_head" : "slow_request_body")
            close()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The client's bytes cannot be framed as HTTP/1.1 (`RequestFraming` refused them).
    private func framingFailed(_ framingError: HTTPFramingError, context: ChannelHandlerContext) {
        // Bytes that came after the gateway started closing are not a refusal. (Bytes after a request that asked for
        // the connection to close never get here: the framing drops them, as RFC 9112 asks.)
        guard context.channel.isActive, !closing else { return }
        let problem =
            switch framingError {
            case .invalid(let why): "invalid HTTP request: \(why)"
            case .tooLarge(let bound): "more than \(bound) bytes that cannot be framed as a request"
            }
        switch machine.state {
        case .forwarding, .relaying, .collecting, .deciding:
            // The bytes after the request in flight cannot be read: that request is still answered (and
            // recorded as it completes), and the connection closes after it. Nothing later can be framed.
            recordUnreadableRest(problem)
            return
        case .authenticating where machine.requestComplete:
            // The same for a whole request whose credentials are still being checked off the loop.
            recordUnreadableRest(problem)
            return
        default:
            break
        }
        // The bytes cannot be read as HTTP: record it and close at once (no further request can be framed).
        recordConnectionRefusal(problem, rule: "http_parse")
        switch machine.state {
        case .idle, .authenticating, .receivingBody, .draining:
            // What was wrong, in the gateway's own words (the reasons quote none of the client's bytes).
            let body = ByteBuffer(string: #"{"error":"# + JSONValue.string("bad request: \(problem)").serialized + "}")
            var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(body.readableBytes))])
            headers.add(name: "Connection", value: "close")
            emit(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers)), context: context)
            emit(.body(.byteBuffer(body)), context: context)
            emitAndFlush(.end(nil), context: context).assumeIsolated().whenComplete { [self] _ in
                responseEncoder.close(context: context)
            }
        default:
            responseEncoder.close(context: context)
        }
    }

    // MARK: - Writing to the client

    /// A response part written by another handler or from outside the pipeline goes through the encoder too.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        emit(unwrapOutboundIn(data), promise: promise, context: context)
    }

    func flush(context: ChannelHandlerContext) {
        responseEncoder.flush(context: context)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        responseEncoder.close(context: context, mode: mode, promise: promise)
    }

    /// Writes a response part to the client, framed and encoded by `responseEncoder` (its bytes go to the handlers
    /// below, or wait for the next flush).
    private func emit(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>? = nil, context: ChannelHandlerContext) {
        responseEncoder.write(part, promise: promise, context: context) { refused in
            // A response the encoder would not frame (it closes the connection): recorded, and logged once a minute.
            recordConnectionRefusal("response not sent: \(refused)", rule: "response_framing")
            if let services, let held = services.operationalLogThrottle.admit("response_framing") {
                services.logger.warning(
                    "response refused by the encoder; connection closed",
                    metadata: ["error": "\(refused)", "similar.failures.held.back": "\(held)"])
            }
        }
    }

    /// `emit`, then a flush; the future completes when the part has been written.
    private func emitAndFlush(_ part: HTTPServerResponsePart, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        let written = context.eventLoop.makePromise(of: Void.self)
        emit(part, promise: written, context: context)
        responseEncoder.flush(context: context)
        return written.futureResult
    }

    // MARK: - Request head

    private func requestHead(_ head: HTTPRequestHead) {
        var head = head
        // RFC 9112 §3.2.2: a server accepts a target in absolute form (found by review: `POST https://host/mcp` got
        // `404`). Only its path is read; the upstream's target never comes from the client's.
        if let first = head.uri.utf8.first, first | 0x20 == UInt8(ascii: "h"), let origin = HeaderText.originForm(ofAbsolute: head.uri) {
            head.uri = origin
        }
        generation += 1
        forwardsNoRequests = false
        let headers = RequestHeaderValues(head.headers)
        deadlines.headReceived(
            expectsBody: headers.contains(.transferEncoding) || (headers.first(.contentLength).flatMap { Int($0) } ?? 0) > 0)
        guard case .authenticate = machine.requestHead(head, headers: headers) else { return close() }
        let path = head.uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(head.uri[..<$0]) } ?? head.uri
        let requestID = services?.requestIDs.next() ?? "-"
        recheckClientCertificateAfterReload()
        request = ExchangeRequest(
            head: head, headers: headers, requestID: requestID, received: .now(), clientAddress: clientAddress, handshake: handshake)
        request!.trace = TraceContext.of(request!.headers, meta: nil)
        plan = nil
        if head.method == .CONNECT || headers.contains(.upgrade) {
            // The HTTP decoder stops framing after such a head: nothing after it could be read, so the request is
            // refused and the connection closed.
            let what = head.method == .CONNECT ? "CONNECT is not supported" : "protocol upgrades (an Upgrade header) are not supported"
            let record = request!.record(.malformed, what, rule: "http_upgrade")
            var refusal = Refusal(
                status: head.method == .CONNECT ? .methodNotAllowed : .badRequest, json: #"{"error":"\#(what)"}"#,
                records: services == nil ? [] : [record])
            refusal.closeConnection = true
            return answer(refusal)
        }
        if path == "/healthz" {
            if head.method == .GET || head.method == .HEAD {
                return answer(Refusal(status: .ok, json: #"{"status":"ok"}"#, records: []))
            }
            let record = request!.record(.malformed, "/healthz takes GET and HEAD", rule: "http_method")
            return answer(
                Refusal(
                    status: .methodNotAllowed, json: #"{"error":"method not allowed","allow":["GET","HEAD"]}"#,
                    headers: [("Allow", "GET, HEAD")], records: services == nil ? [] : [record]))
        }
        if path.hasPrefix(ProtectedResource.wellKnown), let services { return answer(protectedResourceMetadata(path, head, services)) }
        var transport: ExchangeRequest.Transport?
        switch path {
        case services?.mcpPath: transport = .streamableHTTP
        case Self.legacyStreamPath: transport = .legacyStream
        case Self.legacyMessagesPath: transport = .legacyMessages
        default:
            // A tenant's own MCP endpoint, `/tenants/<tenant>` + the MCP path: the same endpoint, which tells an
            // unauthenticated client where its tenant's OAuth metadata is. Any tenant name is an endpoint, served only
            // to that tenant's principals: one without credentials gets the same 401 for a tenant that does not exist
            // as for one that does, and another tenant's principal the same 403, so the answers list no tenants.
            if let services, let tenant = OAuthResources.tenant(inPath: path, mcpPath: services.mcpPath) {
                transport = .streamableHTTP
                request!.pathTenant = tenant
            }
        }
        guard let services, let decisions, let transport else {
            let record = request!.record(.malformed, "no such endpoint: \(head.method.rawValue) \(path.prefix(200))", rule: "path")
            return answer(Refusal(status: .notFound, json: #"{"error":"not found"}"#, records: services == nil ? [] : [record]))
        }
        request!.transport = transport
        let allowed: [HTTPMethod] =
            switch transport {
            case .streamableHTTP: [.POST, .GET, .DELETE]
            case .legacyStream: [.GET]
            case .legacyMessages: [.POST]
            }
        guard allowed.contains(head.method) else {
            let names = allowed.map(\.rawValue)
            let record = request!.record(
                .malformed, "HTTP method \(head.method.rawValue) is not allowed on \(path)", rule: "http_method")
            return answer(
                Refusal(
                    status: .methodNotAllowed,
                    json: #"{"error":"method not allowed","allow":[\#(names.map { "\"\($0)\"" }.joined(separator: ","))]}"#,
                    headers: [("Allow", names.joined(separator: ", "))], records: [record]))
        }
        let pending = request!
        if let introspector = services.introspector, case .success(let token?) = ExchangeDecisions.bearerToken(request!.headers),
            TokenIntrospector.isOpaque(token)
        {
            deadlines.authenticationStarted()
            return authenticateOpaque(pending, token, introspector)
        }
        if let outcome = decisions.authenticate(pending, cheapOnly: true) {
            authenticated(outcome)
        } else {
            // A fresh signature check can take tens of microseconds (RSA): off the loop, so it never delays others.
            deadlines.authenticationStarted()
            authenticateOffLoop(pending, refetchedKeys: false)
        }
    }

    /// Authenticates off the event loop. A token whose `kid` is unknown, of a tenant whose keys are fetched over
    /// HTTPS, may cause one refetch (rate-limited by the fetcher) and is then checked once more; nothing blocks
    /// while the keys are fetched.
    private func authenticateOffLoop(_ pending: ExchangeRequest, refetchedKeys: Bool) {
        guard let services, let decisions, let loop = context?.eventLoop else { return }
        let generation = self.generation
        let future = services.offload(on: loop, source: source) { decisions.authenticate(pending)! }
        future.assumeIsolated().whenComplete { [self] result in
            guard generation == self.generation else { return }
            switch result {
            case .success(.failure(let refusal)):
                guard !refetchedKeys, let tenant = refusal.unknownKeyTenant, let fetcher = services.keyFetcher else {
                    return authenticated(.failure(refusal))
                }
                fetcher.refetchForUnknownKey(tenant: tenant).hop(to: loop).assumeIsolated().whenComplete { [self] fetched in
                    guard generation == self.generation else { return }
                    if case .success(true) = fetched {
                        authenticateOffLoop(pending, refetchedKeys: true)
                    } else {
                        authenticated(.failure(refusal))
                    }
                }
            case .success(let outcome): authenticated(outcome)
            case .failure:
                answer(
                    pending.unavailable(
                        "the gateway is overloaded; try again", rule: "offload", code: GatewayErrorCode.upstreamUnavailable))
            }
        }
    }

    /// An opaque bearer token: asked of the authorization server of the tenant this endpoint serves (or the only
    /// tenant that introspects), without blocking the loop.
    private func authenticateOpaque(_ pending: ExchangeRequest, _ token: String, _ introspector: TokenIntrospector) {
        guard let decisions, let loop = context?.eventLoop else { return }
        guard let tenant = introspector.tenant(forPathTenant: pending.pathTenant) else {
            let error = AuthenticationError.inactiveToken("opaque token, and no tenant introspection covers this endpoint")
            return authenticated(.failure(decisions.authenticationRefusal(pending, error)))
        }
        // Found by review: the introspector is built at start, and a tenant a reload removed went on introspecting.
        guard decisions.services.authenticator.tenants.contains(tenant) else {
            let error = AuthenticationError.inactiveToken("opaque token of tenant \(tenant), which is no longer configured")
            return authenticated(.failure(decisions.authenticationRefusal(pending, error)))
        }
        let generation = self.generation
        introspector.introspect(token, tenant: tenant, source: source).hop(to: loop).assumeIsolated().whenSuccess { [self] outcome in
            guard generation == self.generation else { return }
            switch outcome {
            case .principal(let principal): authenticated(decisions.introspected(pending, principal))
            case .refused(let error): authenticated(.failure(decisions.authenticationRefusal(pending, error)))
            case .unavailable(let why):
                answer(
                    pending.unavailable(
                        "the authorization server could not check the token; try again", rule: "introspection_unavailable",
                        code: GatewayErrorCode.authenticationFailed, status: .serviceUnavailable, detail: why))
            }
        }
    }

    /// `GET /.well-known/oauth-protected-resource…`: the RFC 9728 document of the resource served at that path, or
    /// 404. Public (no credentials needed), audited.
    private func protectedResourceMetadata(_ path: String, _ head: HTTPRequestHead, _ services: GatewayServices) -> Refusal {
        guard head.method == .GET || head.method == .HEAD else {
            return Refusal(
                status: .methodNotAllowed, json: #"{"error":"method not allowed","allow":["GET","HEAD"]}"#,
                headers: [("Allow", "GET, HEAD")], records: [request!.record(.malformed, "metadata takes GET", rule: "http_method")])
        }
        guard let resource = services.oauth?.metadata(at: path) else {
            let record = request!.record(.malformed, "no protected resource metadata at \(path.prefix(200))", rule: "path")
            return Refusal(status: .notFound, json: #"{"error":"not found"}"#, records: [record])
        }
        let record = request!.record(.allow, "protected resource metadata for \(resource.resource)", rule: "oauth_metadata")
        return Refusal(status: .ok, json: resource.document.serialized, records: [record])
    }

    private func authenticated(_ outcome: Result<Principal, Refusal>) {
        endAuthenticationPause()
        // The body rate runs from here: a body held back while the credentials were checked (reading paused, or a
        // client waiting for `100 Continue`) was not slow; the rest of a refused request's body is drained at the rate.
        deadlines.authenticationFinished()
        switch outcome {
        case .failure(let refusal):
            answer(refusal)
        case .success(let principal):
            request?.principal = principal
            unauthenticatedAnswers = 0
            if let tenant = request?.pathTenant, tenant != principal.tenant {
                // A tenant's endpoint serves that tenant's agents only.
                let record = request!.record(
                    .deny, "credentials of tenant \(principal.tenant) on the endpoint of \(tenant)", rule: "tenant_path")
                if request!.handshake?.peerCertificate == nil, let decisions {
                    // A token alone: one not issued for this resource, answered as RFC 6750 `invalid_token` with the
                    // challenge that says where this endpoint's metadata is (found by review: a 403 without one left an
                    // OAuth client no way to learn where to get the right token).
                    var refusal = decisions.authenticationRefusal(
                        request!, .tenantMismatch("the token is tenant \(principal.tenant)'s, on the endpoint of \(tenant)"))
                    refusal.records = [record]
                    return answer(refusal)
                }
                return answer(
                    Refusal(
                        status: .forbidden, id: nil, code: GatewayErrorCode.authenticationFailed,
                        message: "these credentials belong to another tenant than this endpoint's",
                        records: [record]))
            }
            if let refusal = decisions?.checkHead(request!) { return answer(refusal) }
            perform(machine.authenticated())
        }
    }

    // MARK: - Actions

    private func perform(_ action: ExchangeStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .none, .authenticate:
            break
        case .pauseReading:
            pausedForAuthentication = true
        case .resumeReading:
            endAuthenticationPause()
        case .continueAndResumeReading:
            if let request {
                writeHead(HTTPResponseHead(version: request.head.version, status: .continue), context: context)
                responseEncoder.flush(context: context)
            }
            endAuthenticationPause()
        case .refuseBodyTooLarge:
            guard let request, let services else { return close() }
            // Work begun for this request (a fresh credential checked off the loop) is void now.
            generation += 1
            var refusal = Refusal(
                status: .payloadTooLarge, id: nil, code: -32600, message: "request body too large",
                records: [
                    request.record(.malformed, "request body larger than \(services.limits.maximumBodyBytes) bytes", rule: "body_too_large")
                ])
            refusal.closeConnection = true
            answer(refusal)
        case .decide(let body):
            releaseBodyCharge()
            decide(body)
        case .writeResponseHead(var head):
            // The connection closes after this answer (shutting down, or unreadable bytes behind it): it says so.
            if closesAfterExchange && !head.headers.contains(name: "connection") {
                head.headers.add(name: "Connection", value: "close")
            }
            // Flushed when this read from the upstream has been handed over (`upstreamReadComplete`): the head
            // leaves at once, together with whatever body came in the same read.
            writeHead(head, context: context)
            flushPending = true
        case .writeResponseBody(let part):
            if let charge = eventWriteCharge, let held = services?.upstream.heldBytes {
                eventWriteCharge = nil
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { _ in held.give(charge.bytes, tenant: charge.tenant) }
                emit(.body(.byteBuffer(part)), promise: written, context: context)
            } else {
                emit(.body(.byteBuffer(part)), promise: nil, context: context)
            }
            flushPending = true
            if !context.channel.isWritable { upstream?.setReading(false, for: self) }
        case .writeResponseEnd(let close):
            upstream = nil
            flushPending = false
            if let begun = answerBegun { finishAudit(status: begun.status, note: nil, answeredAt: begun.at) }
            releaseBudgets()
            // Finished before the end is written: writing it may deliver the next pipelined request at once. (While
            // shutting down, the connection closes only once the end is written.)
            let written: EventLoopFuture<Void>
            if !closesAfterExchange && !close {
                // The common case: nothing waits for the end to be written (no promise to allocate).
                exchangeFinished()
                emit(.end(nil), promise: nil, context: context)
                FlushBatch.flushSoon(context.channel)
                return
            }
            if closesAfterExchange {
                written = emitAndFlush(.end(nil), context: context)
                if !close { exchangeFinished(ending: written) }
            } else {
                if !close { exchangeFinished() }
                written = emitAndFlush(.end(nil), context: context)
            }
            if close {
                closing = true
                deadlines.connectionClosing()
                written.assumeIsolated().whenComplete { [self] _ in responseEncoder.close(context: context) }
            }
        case .filterCollected(let head, let body):
            upstream = nil
            filterCollected(head, body)
        case .refuseCollectedTooLarge:
            let limit = services?.limits.maximumFilteredResponseBytes ?? 0
            refuseCollected(
                .badGateway, note: "the upstream's list answer was larger than \(limit) bytes",
                message: "upstream list response larger than \(limit) bytes")
        case .answerUpstreamFailure(let failure):
            upstream = nil
            let status: HTTPResponseStatus = failure.isTimeout ? .gatewayTimeout : .badGateway
            // The client learns only that the upstream failed, never its address or the transport error.
            finishAudit(status: Int(status.code), note: "upstream: \(failure)")
            answer(
                Refusal(
                    status: status, id: Self.answeredID(plan), code: GatewayErrorCode.upstreamUnavailable,
                    message: failure.isTimeout ? "upstream did not answer in time" : "upstream unavailable", records: []))
        case .closeConnection:
            close()
        case .cancelUpstream:
            upstream?.cancel(for: self)
            upstream = nil
        }
    }

    /// Writes a response head. One that answers a HEAD request declares the body a GET would get, and none follows:
    /// the encoder is told, so that it frames the response without one.
    private func writeHead(_ head: HTTPResponseHead, context: ChannelHandlerContext) {
        if request?.head.method == .HEAD { responseEncoder.nextHeadAnswersHEAD() }
        emit(.head(head), promise: nil, context: context)
    }

    /// Closes the connection; what was written is flushed first (the last answer's flush may still be waiting for
    /// the end of the loop's round in `FlushBatch`).
    private func close() {
        closing = true
        deadlines.connectionClosing()
        if let context { responseEncoder.close(context: context) }
    }

    /// Writes the gateway's own answer and its records (records first: an answer is never sent unrecorded).
    private func answer(_ refusal: Refusal) {
        // An exchange already answered (a late result of work begun before its answer) gets no second record.
        guard machine.canAnswer else { return }
        var refusal = refusal
        // Answers to callers who never authenticated, one after another on one connection: a refusal or a metadata
        // document costs the gateway an audit record some fifteen times the size of its request. After
        // `maximumUnauthenticatedAnswers` the connection closes with the last, so flooding the log takes a TLS
        // handshake per few records (found by review: `GET` of the public metadata was answered and recorded without
        // end on one connection, 115 MB of audit in 5 s). `/healthz` (unrecorded, and polled by load balancers over
        // kept-alive connections) does not count.
        if request?.principal == nil && (refusal.status.code >= 400 || !refusal.records.isEmpty) {
            unauthenticatedAnswers += 1
            if unauthenticatedAnswers >= Self.maximumUnauthenticatedAnswers { refusal.closeConnection = true }
        }
        if !refusal.records.isEmpty, let services {
            var lines: [UInt8] = []
            for record in refusal.records { lines += record.lineBytes }
            do {
                // Within the caller's tenant's share of the log's room (callers without credentials share one): a
                // tenant's flood of refusals while the disk is slow does not take the room of the others.
                try services.audit.append(lines: lines, tenant: request?.principal?.tenant ?? AuditLog.anonymousShare)
                services.metrics.observe(refusal.records)
            } catch {
                services.metrics.observe(
                    [request?.record(.unavailable, "audit log unavailable", rule: "audit_unavailable")].compactMap { $0 })
                if error.tenantShare && request?.principal == nil {
                    // The log is fine, and callers without credentials have filled their share: a `401` keeps its
                    // `WWW-Authenticate`, and the public metadata document is still served, so that OAuth discovery
                    // works (found by review), unrecorded but counted. A tenant's own refusals stay `503` (fail closed:
                    // its agents never learn a decision the log does not hold).
                    refusal.records = []
                } else {
                    // The request is refused unrecorded (the log cannot take records): counted, and answered under its
                    // id.
                    refusal = Refusal(
                        status: .serviceUnavailable, id: refusal.records.count == 1 ? refusal.records[0].jsonrpcID : nil,
                        code: GatewayErrorCode.auditUnavailable,
                        message: error.tenantShare
                            ? "too many of this tenant's records are waiting for the audit log; try again"
                            : "audit log unavailable; request refused",
                        headers: error.tenantShare ? [("Retry-After", "1")] : [], records: [])
                }
            }
        }
        // On the legacy transport, after its records are written (found by review: a refusal put on the stream first
        // went out unrecorded when the log then refused its records).
        refusal = refuseLegacyMessage(refusal)
        releaseBudgets()
        endAuthenticationPause()
        // A collected answer's bytes stay held until the client has taken its rewritten answer: one that does not read
        // holds them, within the tenant's share, not the process's memory beyond it.
        // (Those bytes are in hand already: taken again below however many the tenant holds.)
        var charge = heldBytes > 0 ? (bytes: refusal.body.count, tenant: heldTenant, taken: false) : nil
        releaseHeldBytes()
        releaseBodyCharge()
        // So do the gateway's own large answers (a batch's errors echo every id), within the tenant's share: one that
        // does not fit is replaced by a short `503` (found by review: a 5.5 MB answer to a client that did not read was
        // held uncounted; then, counted regardless of the share, such answers took the room of every other tenant).
        if charge == nil, refusal.body.count >= GatewayLimits.unchargedBodyBytes, request?.head.method != .HEAD,
            let held = services?.upstream.heldBytes
        {
            let tenant = request?.principal?.tenant ?? ""
            if held.take(refusal.body.count, tenant: tenant) {
                charge = (refusal.body.count, tenant, true)
            } else {
                let closes = refusal.closeConnection
                refusal = Refusal(
                    status: .serviceUnavailable, id: nil, code: GatewayErrorCode.upstreamUnavailable,
                    message:
                        "the answer (\(refusal.body.count) bytes) would hold more than the bytes allowed for this tenant's answers not yet read; try again",
                    headers: [("Retry-After", "1")], records: [])
                refusal.closeConnection = closes
            }
        }
        guard machine.answering(), let context, let request else {
            if let charge, charge.taken { services?.upstream.heldBytes.give(charge.bytes, tenant: charge.tenant) }
            return
        }
        let keepAlive = !refusal.closeConnection && !machine.closesAfterAnswer && !closesAfterExchange
        let head = refusal.responseHead(version: request.head.version, keepAlive: keepAlive)
        writeHead(head, context: context)
        if request.head.method != .HEAD {
            var body = allocator.buffer(capacity: refusal.body.count)
            body.writeBytes(refusal.body)
            if let charge, let held = services?.upstream.heldBytes {
                if !charge.taken { _ = held.take(charge.bytes, tenant: charge.tenant, always: true) }
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { _ in held.give(charge.bytes, tenant: charge.tenant) }
                emit(.body(.byteBuffer(body)), promise: written, context: context)
            } else {
                emit(.body(.byteBuffer(body)), promise: nil, context: context)
            }
        }
        // The exchange moves on before the end is written: writing it may deliver the next pipelined request at once.
        let next = keepAlive ? machine.answerWritten() : .closeConnection
        let written: EventLoopFuture<Void>
        if closesAfterExchange {
            written = emitAndFlush(.end(nil), context: context)
            if case .idle = machine.state { exchangeFinished(ending: written) }
        } else {
            if case .idle = machine.state { exchangeFinished() }
            if case .closeConnection = next {
                written = emitAndFlush(.end(nil), context: context)
            } else {
                // The connection stays open: flushed with the rest of this round (no promise to allocate).
                emit(.end(nil), promise: nil, context: context)
                FlushBatch.flushSoon(context.channel)
                return
            }
        }
        if case .closeConnection = next {
            closing = true
            deadlines.connectionClosing()
            written.assumeIsolated().whenComplete { [self] _ in responseEncoder.close(context: context) }
        }
    }

    /// The response is complete and the connection stays open for the next request. When the gateway is shutting
    /// down, the connection closes instead — once `ending` (the write of the response's end, if one is under way)
    /// has completed, so that nothing already written to the client is discarded by the close.
    private func exchangeFinished(ending: EventLoopFuture<Void>? = nil) {
        collectTimer?.cancel()
        collectTimer = nil
        stopOffloadedFiltering()
        endListening()
        // A legacy stream that ended takes no more events: a later exchange on this connection is not that stream.
        unregisterLegacyStream()
        eventFilter = nil
        releaseHeldBytes()
        releaseBodyCharge()
        deadlines.exchangeFinished()
        request = nil
        plan = nil
        if closesAfterExchange {
            guard let ending else { return close() }
            closing = true
            deadlines.connectionClosing()
            ending.assumeIsolated().whenComplete { [self] _ in close() }
            resumeReadsIfPossible()
            return
        }
        if !pipelined.isEmpty, let context {
            // After the current call returns: the response's end must be written before the next request starts.
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute { bound.value.handlePipelined() }
        }
    }

    /// Handles queued parts until one belongs to a request that must wait again, or the client stops reading its
    /// answers (resumed when it reads again).
    private func handlePipelined() {
        // A connection that closes after the exchange in flight (or is closing already) starts no new one: what is
        // queued is recorded when it closes. (Writing that exchange's end can make the channel writable again and
        // call this before the exchange is finished.)
        guard !closing, !closesAfterExchange else { return }
        while let part = pipelined.first, !(part.isHead && (machine.state != .idle || context?.channel.isWritable == false)) {
            pipelined.removeFirst()
            if part.isHead { pipelinedHeads -= 1 }
            handle(part)
        }
        if pipelined.isEmpty {
            pausedForPipelining = false
            resumeReadsIfPossible()
        }
    }

    private func resumeReadsIfPossible() {
        guard closing || (!pausedForAuthentication && !pausedForPipelining), readPending, let context, context.channel.isWritable else {
            return
        }
        readPending = false
        context.read()
    }

    /// The exchange is past authentication (accepted, refused or answered otherwise): reads paused while the
    /// credentials were checked resume, whatever comes next (the rest of a body to decide or drain, the next request).
    private func endAuthenticationPause() {
        guard pausedForAuthentication else { return }
        pausedForAuthentication = false
        resumeReadsIfPossible()
    }

    // MARK: - Deciding and forwarding

    /// Writes an event the gateway itself sends on a legacy stream (the answer to a refused message), between the
    /// relayed events: those go out whole, so the stream is always at an event boundary here.
    /// Writes a refusal's event onto this legacy stream; `written` is called once it is written out or dropped.
    func writeLegacyEvent(_ event: ByteBuffer, written: (@Sendable () -> Void)?) {
        guard let context, legacyRegistration != nil, case .relaying = machine.state else {
            written?()
            return
        }
        if let written {
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { _ in written() }
            emit(.body(.byteBuffer(event)), promise: promise, context: context)
        } else {
            emit(.body(.byteBuffer(event)), context: context)
        }
        responseEncoder.flush(context: context)
    }

    private func unregisterLegacyStream() {
        guard let (endpoint, owner, token) = legacyRegistration else { return }
        services?.legacyStreams.remove(endpoint, owner: owner, token: token)
        legacyRegistration = nil
    }

    /// A refusal of a legacy message: its JSON-RPC error goes onto the caller's stream and the POST gets `202`, as
    /// the upstream would answer; without a stream here (another replica holds it, or its client is not reading),
    /// the refusal is answered on the POST itself. Whatever refused the message (policy, rate limits, budgets, the
    /// audit log's room): the SDK's legacy client stops sending on its session at the first POST answered otherwise
    /// than `2xx` (found by review: a tenant's request budget, spent by another agent, ended an agent's session). A
    /// body of notifications only gets `202` and no answer, as JSON-RPC has none for it. Left on the POST: a message
    /// the gateway could not read as JSON-RPC (`-32700`, `-32600`, or no id), as the upstream answers one it cannot
    /// parse, and refusals of the caller's credentials.
    private func refuseLegacyMessage(_ refusal: Refusal) -> Refusal {
        guard let request, request.transport == .legacyMessages, let target = request.upstreamTarget, let principal = request.principal,
            let services
        else { return refusal }
        if refusal.answersNoMessage || forwardsNoRequests { return Self.legacyAccepted(records: refusal.records) }
        let unreadable = refusal.status == .badRequest && (refusal.code == -32700 || refusal.code == -32600)
        let answersAMessage =
            refusal.body.starts(with: Array(#"{"jsonrpc""#.utf8)) && !refusal.body.starts(with: Array(#"{"jsonrpc":"2.0","id":null"#.utf8))
            || refusal.body.starts(with: Array(#"[{"jsonrpc""#.utf8))
        guard !unreadable, answersAMessage else { return refusal }
        // A large answer (a batch's errors echo every id) counts in the tenant's held bytes until the stream has
        // written it, within the share; one that does not fit is answered on the POST, where it is replaced by a short
        // `503` (found by review: each stream that stopped reading held one such answer, uncounted).
        var written: (@Sendable () -> Void)?
        if refusal.body.count >= GatewayLimits.unchargedBodyBytes {
            let (held, tenant, bytes) = (services.upstream.heldBytes, principal.tenant, refusal.body.count)
            guard held.take(bytes, tenant: tenant) else { return refusal }
            written = { held.give(bytes, tenant: tenant) }
        }
        guard services.legacyStreams.deliver(refusal.body, to: target, owner: "\(principal.tenant)/\(principal.agent)", written: written)
        else {
            written?()
            return refusal
        }
        var accepted = Self.legacyAccepted(records: refusal.records)
        // A refusal that reads no more of the request's body still closes the connection.
        accepted.closeConnection = refusal.closeConnection
        return accepted
    }

    /// `202` with no body: a legacy message whose answer, if any, travels on its stream.
    private static func legacyAccepted(records: [AuditRecord]) -> Refusal {
        var accepted = Refusal(status: .accepted, json: "", records: records)
        accepted.body = []
        return accepted
    }

    private func decide(_ body: ByteBuffer, attempt: Int = 0) {
        guard let services, let decisions, let request else { return close() }
        if request.head.method != .POST {
            return forward(decisions.passThroughPlan(request))
        }
        let tenant = request.principal?.tenant ?? ""
        let size = body.readableBytes
        let limits = services.limits
        let large = size >= limits.offloadDecisionBytes
        // A mid-sized body of a tenant whose decisions recently held a loop too long goes off the loop as well.
        if large || (size >= limits.costlyDecisionOffloadBytes && services.costlyTenants.isCostly(tenant, now: services.monotonicSeconds)) {
            // A large body can take long to canonicalise: decided off the loop, so other requests never wait.
            // Its own low-priority threads, a few per tenant: one tenant's heavy calls never hold up another's.
            let generation = self.generation
            let limit = large ? limits.maximumLargeDecisionsPerTenant : limits.maximumCostlyDecisionsPerTenant
            let lastAttempt = attempt + 1 >= Self.maximumDecisionAttempts
            // A costly tenant's mid-sized calls wait in a queue of their own, not behind its large ones (which may
            // take seconds each).
            let queue = large ? tenant : DecisionPool.midSizedQueue(of: tenant)
            DecisionPool.shared.run(for: queue, limit: limit, on: context!.eventLoop) {
                decisions.decidePost(request, body: body, lastAttempt: lastAttempt)
            }
            .assumeIsolated().whenComplete { [self] result in
                guard generation == self.generation else { return }
                switch result {
                case .success(let outcome): settle(outcome, body: body, attempt: attempt)
                case .failure(let error) where error is DecisionPoolRefused:
                    answer(
                        request.unavailable(
                            large
                                ? "this tenant already has \(limit) large calls being decided; try again"
                                : "this tenant already has \(limit) mid-sized calls being decided off the event loops (its decisions were slow there); try again",
                            rule: large ? "large_decision_budget" : "costly_decision_budget",
                            code: GatewayErrorCode.rateLimited, status: .tooManyRequests, headers: [("Retry-After", "1")]))
                case .failure:
                    answer(
                        request.unavailable(
                            "the gateway is overloaded; try again", rule: "offload", code: GatewayErrorCode.upstreamUnavailable))
                }
            }
            return
        }
        // The thread's CPU time, not the wall clock: an event loop preempted meanwhile did not decide slowly.
        let started = size >= limits.costlyDecisionOffloadBytes ? CostlyTenants.threadCPUNanoseconds() : nil
        let outcome = decisions.decidePost(request, body: body, lastAttempt: attempt + 1 >= Self.maximumDecisionAttempts)
        if let started, CostlyTenants.threadCPUNanoseconds() - started > TimeAmount(limits.costlyDecision).nanoseconds,
            services.costlyTenants.mark(tenant, now: services.monotonicSeconds),
            let held = services.operationalLogThrottle.admit("costly/\(tenant)")
        {
            // Bodies smaller than the mark's size cannot take long (checks are linear in the bytes): not timed.
            services.logger.notice(
                "a decision held its event loop too long; this tenant's mid-sized calls are decided off the loops for a while",
                metadata: [
                    "tenant": "\(tenant)", "body.bytes": "\(size)", "similar.held.back": "\(held)",
                    "seconds": "\(Int(CostlyTenants.memory))",
                ])
        }
        settle(outcome, body: body, attempt: attempt)
    }

    /// Most times one body is decided: after waiting for shared rate-limit leases it is decided again, and the last
    /// attempt refuses (rate limited) rather than wait once more (other calls can spend a fetched lease first).
    static let maximumDecisionAttempts = 6

    private func settle(_ outcome: ExchangeDecisions.PostDecision, body: ByteBuffer, attempt: Int) {
        switch outcome {
        case .forward(let plan):
            forward(plan)
        case .refuse(let refusal):
            answer(refusal)
        case .ask(let buckets, let waiting):
            guard let request, let context else { return close() }
            // The last attempt never asks (LastAttemptLimits): this refusal is for a broken invariant, audited all the same.
            guard let shared = services?.sharedLimits, attempt + 1 < Self.maximumDecisionAttempts else {
                return answer(
                    request.unavailable(
                        "shared rate limits could not be decided; try again", rule: "shared_limits",
                        code: GatewayErrorCode.sharedLimitsUnavailable, headers: [("Retry-After", "1")]))
            }
            // Waits on this loop for the leases (bounded by the Redis command deadline), then decides again. Should the
            // body be abandoned meanwhile, each of its messages is recorded.
            let generation = self.generation
            waitingRecords = waiting
            shared.ask(buckets, on: context.eventLoop).assumeIsolated().whenComplete { [self] _ in
                guard generation == self.generation else { return }
                waitingRecords = []
                decide(body, attempt: attempt + 1)
            }
        }
    }

    private func forward(_ plan: ForwardPlan) {
        guard let services, let request, let principal = request.principal, let context else { return }
        // A client's response (to a server's request) is recorded as method `response` with the server's id: a refusal
        // of it answers no request of the client's (found by review: it went onto the stream under the server's id).
        forwardsNoRequests = plan.records.allSatisfy { $0.jsonrpcID == nil || $0.method == "response" }
        let configured =
            request.transport == .streamableHTTP
            ? services.upstream.endpoint(for: principal.tenant) : services.upstream.legacyEndpoint(for: principal.tenant)
        guard let endpoint = configured else {
            return answer(
                Self.notSent(plan, message: "no upstream is configured for this tenant", note: "no upstream configured for tenant"))
        }
        let upstreamRequest: UpstreamRequest
        do {
            upstreamRequest = try self.upstreamRequest(endpoint, plan: plan, allocator: allocator)
        } catch {
            // A header the client sent or the gateway holds that no header line can carry: nothing is sent.
            if let held = services.operationalLogThrottle.admit("unsendable/\(principal.tenant)") {
                services.logger.warning(
                    "a request could not be sent upstream",
                    metadata: ["tenant": "\(principal.tenant)", "error": "\(error)", "similar.held.back": "\(held)"])
            }
            return answer(Self.notSent(plan, message: "the request cannot be sent upstream: \(error)", note: "request not sent: \(error)"))
        }
        var budgets: [(UpstreamBudgets.Budget, limit: Int)] = [
            (.tenantRequests(principal.tenant), services.limits.maximumRequestsPerTenant),
            (.agentRequests("\(principal.tenant)/\(principal.agent)"), services.limits.requestsPerAgent),
        ]
        if plan.listens {
            budgets.append((.tenantStreams(principal.tenant), services.limits.maximumStreamsPerTenant))
            budgets.append((.agentStreams("\(principal.tenant)/\(principal.agent)"), services.limits.maximumStreamsPerAgent))
        }
        if let full = services.upstream.budgets.acquire(budgets) {
            return answer(budgetRefusal(full, plan: plan))
        }
        heldBudgets = budgets.map(\.0)
        // Room for the records is reserved before anything is forwarded: a forwarded call always has its record. The
        // room is what the records will take (their arguments only as far as they keep them), not the body: calls
        // with large bodies held by a slow upstream would otherwise fill the log's bound and refuse every tenant.
        do {
            reservation = try services.audit.reserve(
                bytes: plan.records.reduce(0) { $0 + $1.reservationBytes }, tenant: request.principal?.tenant)
        } catch  where error.neverFits {
            // The call alone would need more of the log than a tenant may hold: it never fits, so no retry is offered.
            return answer(
                Refusal(
                    status: .payloadTooLarge, id: Self.answeredID(plan), code: -32600,
                    message: "the request is too large for the audit log: its records would take more than a tenant's share of its room",
                    records: [request.record(.malformed, error.reason, rule: "audit_room")]))
        } catch  where error.tenantShare {
            // The log is fine; this tenant's calls in flight hold their share of its room: refused, and recorded.
            return answer(
                Refusal(
                    status: .serviceUnavailable, id: Self.answeredID(plan), code: GatewayErrorCode.auditUnavailable,
                    message: "this tenant has too many calls in flight for the audit log's room; try again",
                    headers: [("Retry-After", "1")],
                    records: [request.record(.unavailable, error.reason, rule: "audit_room")]))
        } catch {
            services.metrics.observe([request.record(.unavailable, "audit log unavailable", rule: "audit_unavailable")])
            return answer(
                Refusal(
                    status: .serviceUnavailable, id: Self.answeredID(plan), code: GatewayErrorCode.auditUnavailable,
                    message: "audit log unavailable; request refused", records: []))
        }
        self.plan = plan
        machine.forwarded()
        let pool = services.upstream.pool(for: context.eventLoop)
        if let connection = pool.idleConnection(endpoint) {
            return send(upstreamRequest, plan: plan, endpoint: endpoint, on: connection, services: services)
        }
        let generation = self.generation
        pool.acquire(endpoint) { [self] result in
            switch result {
            case .success(let connection):
                guard generation == self.generation, case .forwarding = machine.state else {
                    connection.cancel()
                    return
                }
                send(upstreamRequest, plan: plan, endpoint: endpoint, on: connection, services: services)
            case .failure(let error):
                guard generation == self.generation else { return }
                upstreamFailed(error)
            }
        }
    }

    /// `502` for a decided request that cannot go upstream: the caller gets `message`, each record `note`.
    private static func notSent(_ plan: ForwardPlan, message: String, note: String) -> Refusal {
        Refusal(
            status: .badGateway, id: answeredID(plan), code: GatewayErrorCode.upstreamUnavailable, message: message,
            records: plan.records.map { record in
                var record = record
                record.upstreamStatus = 502
                record.reason += "; upstream: " + note
                return record
            })
    }

    /// Sends the request on `connection`, which this exchange now holds.
    private func send(
        _ upstreamRequest: UpstreamRequest, plan: ForwardPlan, endpoint: UpstreamEndpoint, on connection: UpstreamConnection,
        services: GatewayServices
    ) {
        upstream = connection
        // A tools/call may run as long as its tenant allows: a JSON-answering upstream sends its head last.
        let headTimeout =
            plan.isToolCall
            ? plan.ruleCallTimeout ?? endpoint.callTimeout ?? services.limits.upstreamTimeout : services.limits.upstreamTimeout
        connection.send(
            upstreamRequest, to: self, headTimeout: TimeAmount(headTimeout),
            idleTimeout: TimeAmount(services.limits.upstreamIdleStreamTimeout))
    }

    /// The JSON-RPC id an error about the upstream answers: the request's, for a body of one request (a batch, a
    /// notification or a GET stream gets `null`: no single id is the right one).
    static func answeredID(_ plan: ForwardPlan?) -> JSONValue? {
        guard let plan, plan.records.count == 1 else { return nil }
        return plan.records[0].jsonrpcID
    }

    /// `text` cut to at most `bytes` bytes of UTF-8, at a character boundary.
    static func cut(_ text: String, toBytes bytes: Int) -> String {
        guard text.utf8.count > bytes else { return text }
        var kept = String.UnicodeScalarView()
        var count = 0
        for scalar in text.unicodeScalars {
            count += UTF8.width(scalar)
            guard count <= bytes else { break }
            kept.append(scalar)
        }
        return String(kept)
    }

    /// The legacy HTTP+SSE transport's stream (`GET`) and message (`POST`) endpoints.
    static let legacyStreamPath = "/sse"
    static let legacyMessagesPath = "/messages"

    /// Request headers passed to the upstream, with `Mcp-Param-*`. Everything else — `Authorization`, cookies, `Host`,
    /// forwarding and hop-by-hop headers, any header claiming an identity — stays at the gateway. Each of them may
    /// appear once only (a request repeating one is refused with its head, `RequestHeaderValues.singleValuedCount`), so
    /// its value is the one the pass over the head found.
    static let forwardedRequestHeaders: [(name: String, header: RequestHeaderValues.Name)] = [
        ("accept", .accept), ("content-type", .contentType), ("mcp-protocol-version", .mcpProtocolVersion),
        ("mcp-method", .mcpMethod), ("mcp-name", .mcpName),
    ]
    // `traceparent` and `tracestate` are the gateway's own (its span as the parent), added with the trace context.

    /// The request as the upstream gets it: the client's method and target (or the upstream's path), `Host`, the
    /// forwarded headers, the gateway's own (session, trace, credential) and the body.
    private func upstreamRequest(
        _ endpoint: UpstreamEndpoint, plan: ForwardPlan, allocator: ByteBufferAllocator
    ) throws(UpstreamRequest.InvalidHeader) -> UpstreamRequest {
        let request = self.request!
        var upstream = try UpstreamRequest(
            method: request.head.method, target: request.upstreamTarget ?? endpoint.path, allocator: allocator)
        try upstream.add(name: "Host", value: endpoint.hostHeader)
        // The forwarded headers from the values read with the head (this runs for every request: no second pass over
        // the client's headers). A task method's Mcp-Name is the handle the client knows: the upstream gets its own
        // task id there instead.
        // `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` mirror a POSTed message, which the gateway checks them against: on
        // a GET or DELETE there is none, and they would reach the upstream unchecked (found by review).
        let mirrorsBody = request.head.method == .POST
        // RFC 9110 §7.6.1: headers the client names in `Connection` are for its hop only (found by review: they were
        // forwarded). Read only when the request has a `Connection` header; a set, as a head can name thousands.
        let hopOnly: Set<String> =
            request.headers.first(.connection).map(HeaderText.namesOptions) == true || request.headers.isRepeated(.connection)
            ? Set(HeaderText.connectionOptions(request.head.headers)) : []
        for (name, header) in Self.forwardedRequestHeaders {
            guard let value = request.headers.first(header) else { continue }
            if !mirrorsBody && (header == .mcpMethod || header == .mcpName) { continue }
            if !hopOnly.isEmpty && hopOnly.contains(name) { continue }
            if header == .mcpName, let upstreamName = plan.upstreamName {
                try upstream.add(name: "Mcp-Name", value: MCPHeaderValue.encode(upstreamName))
            } else if header == .contentType, plan.body != nil {
                // A body the gateway read as UTF-8 JSON is announced as such, whatever parameters the client's
                // header had (`JSONMediaType`): the upstream must not decode it by another charset.
                try upstream.add(name: name, value: JSONMediaType.canonical)
            } else {
                try upstream.add(name: name, value: value)
            }
        }
        // The upstream's own session and event ids, unsealed from the handles the client presented.
        if let session = request.upstreamSession { try upstream.add(name: "Mcp-Session-Id", value: session) }
        if let event = request.upstreamLastEventID { try upstream.add(name: "Last-Event-ID", value: event) }
        // Arguments a tool mirrors into headers (MCP 2026-07-28; checked against the body when the schema is known), in
        // the client's order; only a request that has any is searched for them.
        if mirrorsBody && request.headers.hasParameterHeaders {
            for (name, value) in request.head.headers where MCPHeaderValue.isParamHeader(name) {
                if !hopOnly.isEmpty && hopOnly.contains(name.lowercased()) { continue }
                try upstream.add(name: name, value: value)
            }
        }
        if let trace = request.trace {
            try upstream.addTraceparent(trace)
            if let state = trace.state { try upstream.add(name: "tracestate", value: state) }
        }
        // Its name is none of the headers above (`UpstreamConfiguration.credentialHeaderProblem`).
        if let credential = endpoint.credential { try upstream.add(name: credential.name, value: credential.value) }
        upstream.finish(body: plan.body)
        return upstream
    }

    private func budgetRefusal(_ full: UpstreamBudgets.Budget, plan: ForwardPlan) -> Refusal {
        let (reason, rule, status): (String, String, HTTPResponseStatus)
        switch full {
        case .agentStreams: (reason, rule, status) = ("too many open streams for this agent", "agent_stream_budget", .tooManyRequests)
        case .tenantStreams: (reason, rule, status) = ("too many open streams for this tenant", "tenant_stream_budget", .tooManyRequests)
        case .tenantRequests:
            (reason, rule, status) = ("too many requests in flight for this tenant", "tenant_request_budget", .serviceUnavailable)
        case .agentRequests:
            (reason, rule, status) = ("too many requests in flight for this agent", "agent_request_budget", .serviceUnavailable)
        case .upstreamConnections:
            (reason, rule, status) = ("upstream connection budget exhausted", "upstream_connection_budget", .serviceUnavailable)
        }
        let records = plan.records.map { record in
            var record = record
            record.decision = .unavailable
            record.rule = rule
            record.reason = reason
            return record
        }
        return Refusal(
            status: status, id: Self.answeredID(plan), code: GatewayErrorCode.upstreamUnavailable, message: reason,
            headers: [("Retry-After", "1")],
            records: records)
    }

    /// Writes the plan's records into their reservation, once, with the upstream's status.
    private func finishAudit(status: Int?, note: String?, answeredAt: NIODeadline? = nil) {
        guard let reservation, plan != nil, let services, let request else { return }
        self.reservation = nil
        answerBegun = nil
        let now = answeredAt ?? NIODeadline.now()
        let latency = Int((now - request.received).nanoseconds / 1000)
        // Completed in place, in the plan this exchange holds (a copy of the plan or of each record would retain and
        // release every field of it).
        let cutNote = note.map { "; " + Self.cut($0, toBytes: AuditRecord.noteBytes) }
        for index in plan!.records.indices {
            plan!.records[index].upstreamStatus = status
            plan!.records[index].latencyMicroseconds = latency
            // Capped: the record's reserved room counts on at most this much (`AuditRecord.noteBytes`).
            if let cutNote { plan!.records[index].reason += cutNote }
        }
        services.audit.append(plan!.records, into: reservation)
        services.metrics.observe(plan!.records)
        // A call its client (or the gateway's shutdown) ended before the upstream answered says nothing about the
        // upstream: neither a failure nor a latency.
        if let status {
            services.metrics.observeUpstream(tenant: request.principal?.tenant, seconds: Double(latency) / 1e6, status: status)
        }
    }

    /// A request the connection lost before it was decided (its identity being checked, its body arriving, or its
    /// decision being made off the loop) still gets its record; the late result of that work is then ignored.
    private func recordUndecided() {
        guard plan == nil, !connectionRefusalRecorded, let request, let services else { return }
        let stage: String
        switch machine.state {
        case .authenticating: stage = "while its credentials were being checked"
        case .receivingBody: stage = "while its body was arriving"
        case .deciding: stage = "while it was being decided"
        default: return
        }
        generation += 1
        let cause = draining ? "the gateway shut down" : "the client closed the connection"
        // A body waiting for a shared rate-limit lease: one record per message, as a decided body would have.
        let single = request.record(.unavailable, "not decided: \(cause) \(stage)", rule: "abandoned")
        var records =
            waitingRecords.isEmpty
            ? [single]
            : waitingRecords.map { waiting in
                var record = waiting
                record.reason = "not decided: \(cause) while it waited for a shared rate-limit lease"
                record.latencyMicroseconds = request.elapsedMicroseconds
                return record
            }
        waitingRecords = []
        do {
            try services.audit.append(lines: records.flatMap(\.lineBytes))
        } catch {
            // More than the log takes at once: the one record of the request, at least.
            records = [single]
            try? services.audit.append(lines: single.lineBytes, counted: false)
        }
        services.metrics.observe(records)
    }

    /// Pipelined requests still waiting for their turn when the connection ends: each gets a record, as it was
    /// received but never decided (nothing about it is known beyond its head).
    /// Why the connection closed, as records say it (found by review: an answer cut off by the gateway's own close,
    /// `pipeline_depth` for one, was recorded as the client's doing).
    private var closeCause: String {
        draining ? "the gateway shut down" : closing ? "the gateway closed the connection" : "the client closed the connection"
    }

    /// Up to this many queued requests get a record each when their connection ends; more share one.
    static let queuedRecordsEach = 4

    private func recordQueuedRequests() {
        guard let services else { return }
        let cause = closeCause
        var records: [AuditRecord] = []
        // Counted in the queue (`pipelinedHeads` may count one more: the head that tripped the depth, recorded already).
        let queued = pipelined.reduce(0) { count, part in if case .head = part { count + 1 } else { count } }
        if queued > Self.queuedRecordsEach {
            // Many: one record for them all (found by review: 16 refusals and then 64 queued requests, each with a
            // record of its own, made 80 records per connection of a caller without credentials).
            var record = AuditRecord(
                requestID: services.requestIDs.next(), httpMethod: "-", decision: .unavailable,
                reason: "\(queued) pipelined requests not decided: \(cause) before the requests ahead of them were answered")
            record.clientAddress = clientAddress
            record.rule = "abandoned"
            records.append(record)
        } else {
            for part in pipelined {
                guard case .head(let head) = part else { continue }
                var record = AuditRecord(
                    requestID: services.requestIDs.next(), httpMethod: head.method.rawValue, decision: .unavailable,
                    reason: "not decided: \(cause) before the pipelined requests ahead of it were answered")
                record.clientAddress = clientAddress
                record.rule = "abandoned"
                records.append(record)
            }
        }
        pipelined.removeAll()
        pipelinedHeads = 0
        guard !records.isEmpty else { return }
        try? services.audit.append(lines: records.flatMap(\.lineBytes))
        services.metrics.observe(records)
    }

    /// Gives back the bytes of answer this exchange holds.
    private func releaseHeldBytes() {
        guard heldBytes > 0 else { return }
        services?.upstream.heldBytes.give(heldBytes, tenant: heldTenant)
        heldBytes = 0
    }

    private func releaseBudgets() {
        guard !heldBudgets.isEmpty else { return }
        services?.upstream.budgets.release(heldBudgets)
        heldBudgets = []
    }

    /// Records that the bytes after the request in flight cannot be read, without touching that request (it is
    /// answered and recorded as it completes), and has the connection close after it.
    private func recordUnreadableRest(_ reason: String) {
        unreadableRest = true
        guard let services else { return }
        var record = AuditRecord(
            requestID: services.requestIDs.next(), httpMethod: "-", decision: .malformed,
            reason: "\(reason) after the request in flight; the connection closes once that request is answered")
        record.clientAddress = clientAddress
        record.rule = "http_parse"
        record.tenant = request?.principal?.tenant
        record.agent = request?.principal?.agent
        try? services.audit.append(lines: record.lineBytes)
        services.metrics.observe([record])
    }

    /// Records a refusal that ends the connection outside any exchange (slow client, unreadable HTTP), or that ends
    /// the stream `stream` records (its method, target, session and JSON-RPC id are repeated, so the end of a stream
    /// can be told apart from the end of a connection).
    private func recordConnectionRefusal(
        _ reason: String, rule: String, decision: AuditRecord.Decision = .malformed, stream: AuditRecord? = nil
    ) {
        guard let services else { return }
        connectionRefusalRecorded = true
        // This record stands for the request under way, if any: a result still to come for it (credentials checked
        // off the loop, a decision, a lease) is dropped, so the request is never answered or recorded again.
        generation += 1
        var record = AuditRecord(
            requestID: services.requestIDs.next(), httpMethod: request?.head.method.rawValue ?? "-", decision: decision, reason: reason)
        record.clientAddress = clientAddress
        record.rule = rule
        record.tenant = request?.principal?.tenant
        record.agent = request?.principal?.agent
        record.traceID = request?.trace?.traceID
        if let stream {
            record.authMethod = stream.authMethod
            record.method = stream.method
            record.target = stream.target
            record.jsonrpcID = stream.jsonrpcID
            record.sessionID = stream.sessionID
        }
        try? services.audit.append(lines: record.lineBytes)
        services.metrics.observe([record])
    }

    // MARK: - Upstream responses

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        var head = head
        if let request, MCPMethod.isModern(request.headers.first(.mcpProtocolVersion)) {
            // 2026-07-28 has no sessions: a client that kept a session id from this answer would have every later
            // request refused (the gateway takes none with that version).
            head.headers.remove(name: "mcp-session-id")
        }
        // The session the answer belongs to: the one it opens (an `initialize` answered on SSE), else the request's.
        let answerSession = head.headers.first(name: "mcp-session-id") ?? request?.upstreamSession
        if let services, let principal = request?.principal, let session = head.headers.first(name: "mcp-session-id") {
            // The client gets a sealed handle binding the upstream's session to it, never the session id itself.
            let handle = services.sessionHandles.seal(session: session, for: principal)
            guard SessionHandles.isUsable(session: session), handle.utf8.count <= SessionHandles.maximumHandleBytes else {
                // A session the client could never come back to (an id MCP does not allow, which could not go back
                // upstream as it came, or one too long for a handle the gateway opens): the upstream broke the
                // protocol, and the client hears 502 now rather than on its next request.
                upstream?.cancel(for: self)
                upstream = nil
                return upstreamFailed(
                    .protocolError(
                        "the upstream's Mcp-Session-Id is not usable (\(session.utf8.count) bytes; MCP allows 0x21-0x7E only, and "
                            + "its handle may not exceed \(SessionHandles.maximumHandleBytes) bytes)"))
            }
            head.headers.replaceOrAdd(name: "Mcp-Session-Id", value: handle)
        }
        let answerType = AnswerMediaType(head.headers.first(name: "content-type"))
        if case .ambiguous(let value) = answerType {
            // Clients tell SSE apart differently (the TypeScript SDK looks for `text/event-stream` anywhere in the
            // value, the Python SDK at its start): an answer one of them reads as events and the gateway as JSON would
            // pass unfiltered (found by review: `application/json; profile="text/event-stream"`).
            upstream?.cancel(for: self)
            upstream = nil
            return upstreamFailed(
                .protocolError("the upstream's Content-Type names text/event-stream but is not it: \(value.prefix(200))"))
        }
        let isEventStream = answerType == .eventStream
        // Every client reads the type the gateway read.
        if isEventStream { head.headers.replaceOrAdd(name: "Content-Type", value: AnswerMediaType.eventStreamType) }
        let filtersLists = plan?.response == .filterLists || plan?.isStream == true
        // A list answer that is not SSE is collected and filtered, whatever its 2xx status; so is a GET stream that
        // answers with anything but SSE.
        let collect = filtersLists && !isEventStream
        // A relayed answer is recorded now, with the upstream's status. A collected one only once the client's answer
        // is known (the filtered list, or the gateway's own 502/504), with the status the client got.
        let collectErrors = plan?.renamesListRequests == true
        if !ExchangeStateMachine.collects(head, collect: collect, collectErrors: collectErrors) {
            if plan?.listens == true {
                finishAudit(status: Int(head.status.code), note: nil)
            } else {
                answerBegun = (Int(head.status.code), .now())
            }
        }
        if isEventStream, let services, let plan, let principal = request?.principal {
            // Relayed one event at a time: event ids sealed to this caller and its session, list results filtered.
            // The client's framing is chunked, since lengths change.
            let handles = services.sessionHandles
            let session = answerSession
            eventFilter = SSEEventFilter(
                filter: filtersLists ? listFilter(plan.isStream ? nil : plan.listRequests) : nil,
                maximumEventBytes: services.limits.maximumFilteredResponseBytes,
                sealEventID: { handles.seal(event: $0, session: session, for: principal) })
            if !filtersLists {
                // The answer to an ordinary call: only resource updates the caller may not see are taken out.
                let policy = services.policy
                eventFilter!.updateFilter = ListFilter(currentPolicy: { policy.snapshot }, principal: principal, requests: nil)
                eventFilter!.updateFilter!.tasks = taskOwnership()
            }
            if request?.transport == .legacyStream, let context {
                // The legacy stream announces where to post messages: the client is told the gateway's own message
                // endpoint, with the upstream's sealed to it (so only this caller can post there, through the gateway).
                // The stream is registered under that endpoint, so that refused messages are answered on it.
                let streams = services.legacyStreams
                let loop = context.eventLoop
                let writer = NIOLoopBound(self, eventLoop: loop)
                let owner = "\(principal.tenant)/\(principal.agent)"
                eventFilter!.rewriteEndpoint = { [self] upstreamPath in
                    // A second `endpoint` event replaces the first: the earlier registration goes.
                    unregisterLegacyStream()
                    legacyRegistration = (
                        upstreamPath, owner,
                        streams.add(upstreamPath, owner: owner, isWritable: { [channel = context.channel] in channel.isWritable }) {
                            event, written in
                            loop.execute { writer.value.writeLegacyEvent(event, written: written) }
                        }
                    )
                    return Self.legacyMessagesPath + "?session=" + handles.seal(messagesEndpoint: upstreamPath, for: principal)
                }
            }
            head.headers.remove(name: "content-length")
            if plan.listens, let context {
                startListening(principal, context: context)
            }
        }
        perform(machine.upstreamHead(head, collect: collect, collectErrors: collectErrors))
        if collect, case .collecting = machine.state, let context, let services {
            // Bounded in time too: an upstream that keeps a list stream open cannot hold the exchange.
            let generation = self.generation
            collectTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(services.limits.upstreamTimeout)) { [self] in
                guard generation == self.generation, case .collecting = machine.state else { return }
                if filteringOffLoop {
                    // Answered in full, but still waiting for (or in) its filtering on the decision threads.
                    stopOffloadedFiltering()
                    return refuseCollected(
                        .gatewayTimeout,
                        note:
                            "the list answer was not filtered within the upstream timeout (the upstream's time and the filtering's together)",
                        message: "the list answer could not be filtered in time; try again")
                }
                refuseCollected(
                    .gatewayTimeout, note: "the upstream did not finish its list answer in time",
                    message: "upstream did not finish its list answer in time")
            }
        }
    }

    func upstreamResponseBody(_ part: ByteBuffer) {
        guard eventFilter != nil else {
            if case .collecting = machine.state, !hold(heldBytes + part.readableBytes) { return refuseHeldBytes() }
            return perform(machine.upstreamBody(part))
        }
        if eventOffload != nil {
            // Behind an event being filtered off the loop: kept, in order, counted in the tenant's held bytes.
            eventOffload!.backlog.append(part)
            eventOffload!.backlogBytes += part.readableBytes
            guard hold(eventFilter!.pendingBytes + eventOffload!.backlogBytes) else {
                return endStream(
                    "upstream SSE stream closed: what arrived behind an event being filtered would hold more than the bytes allowed for this tenant's answers",
                    rule: "held_response_bytes")
            }
            return
        }
        do {
            // The events of the costly size filtered here are timed: a tenant whose events held the loop too long has
            // its events from that size up filtered off the loops for a while. Smaller ones are not (marking would not
            // move them), nor is gathering part of an event.
            let gathered = eventFilter!.pendingBytes + part.readableBytes
            let costlySize = services?.limits.costlyDecisionOffloadBytes ?? .max
            let fed = try eventFilter!.feed(
                part, deferringFrom: gathered >= costlySize ? listOffloadBytes() : services?.limits.offloadListBytes ?? .max,
                timingFrom: costlySize)
            if fed.largeEventNanoseconds > 0 { noteListFilteringTime(fed.largeEventNanoseconds, bytes: gathered) }
            guard hold(eventFilter!.pendingBytes + (fed.deferred?.count ?? 0)) else {
                // The event being assembled would take more than the tenant's share of held bytes: like an event too
                // large to read, neither relayed unread nor held; the stream ends.
                return endStream(
                    "upstream SSE stream closed: its unfinished event would hold more than the bytes allowed for this tenant's answers",
                    rule: "held_response_bytes")
            }
            relayEvents(fed.events)
            // (Unless relaying ended the stream.)
            if let deferred = fed.deferred, eventFilter != nil { filterEventOffLoop(deferred) }
        } catch {
            // An event that cannot be read (too large, or not JSON where a list may be) is neither relayed unread nor
            // held: the stream ends.
            endStream("upstream SSE stream closed: \(error)", rule: "sse_event_unreadable")
        }
    }

    /// Relays filtered SSE events to the client; a large write counts in the tenant's held bytes until written.
    private func relayEvents(_ events: [UInt8]) {
        do {
            if events.count >= Self.chargedEventWriteBytes, let held = services?.upstream.heldBytes {
                // A large event written to a client that does not read would stay in the connection's output: its
                // bytes count in the tenant's share until they are written out (backpressure bounds smaller ones).
                let tenant = request?.principal?.tenant ?? ""
                guard held.take(events.count, tenant: tenant) else {
                    return endStream(
                        "upstream SSE stream closed: its next event would hold more than the bytes allowed for this tenant's answers",
                        rule: "held_response_bytes")
                }
                eventWriteCharge = (events.count, tenant)
            }
            if !events.isEmpty { perform(machine.upstreamBody(ByteBuffer(bytes: events))) }
            if let charge = eventWriteCharge {
                // Not written (the exchange moved on): given back at once.
                eventWriteCharge = nil
                services?.upstream.heldBytes.give(charge.bytes, tenant: charge.tenant)
            }
        }
    }

    /// What waits while a large SSE event is filtered on the decision threads.
    private struct EventOffload {
        /// Set when the exchange no longer wants the result.
        let cancelled: OffloadCancellation
        /// Body parts that arrived meanwhile, in order, and their bytes.
        var backlog: [ByteBuffer] = []
        var backlogBytes = 0
        /// The upstream's answer ended meanwhile, or its connection failed.
        var ended = false
        var failure: UpstreamFailure?
    }

    /// Filters `event` (of `offloadListBytes` or more, to be parsed; less for a costly tenant: `listOffloadBytes`) on
    /// the decision threads, in its tenant's share of them, as large JSON list answers are: one tenant's multi-megabyte
    /// SSE events never hold an event loop. The stream waits meanwhile (the upstream's reading paused); the filtered
    /// event, then what arrived behind it, go on in order when it is back.
    private func filterEventOffLoop(_ event: [UInt8]) {
        guard let services, let context, let filter = eventFilter, let tenant = request?.principal?.tenant else {
            return endStream("upstream SSE stream closed: its event could not be filtered", rule: "offload")
        }
        let cancelled = OffloadCancellation()
        eventOffload = EventOffload(cancelled: cancelled)
        upstream?.setReading(false, for: self)
        // The job holds the event's bytes until it ends, whatever becomes of the exchange meanwhile.
        let charge = (bytes: event.count, tenant: heldTenant)
        heldBytes -= event.count
        let held = services.upstream.heldBytes
        let generation = self.generation
        let limit = services.limits.maximumLargeListsPerTenant
        // Under the offload size, off the loop only because the tenant's lists were slow there (`listOffloadBytes`).
        let midSized = event.count < services.limits.offloadListBytes
        // Handed over whole: the loop does not feed this filter (nor touch its task ownership) until the result is back.
        let handedOver = HandedOver(filter)
        let queue = midSized ? DecisionPool.midSizedListQueue(of: tenant) : DecisionPool.listQueue(of: tenant)
        DecisionPool.shared.run(for: queue, limit: limit, on: context.eventLoop) {
            () -> Result<[UInt8], SSEEventFilter.Unreadable>? in
            guard !cancelled.isSet else { return nil }
            return Result { () throws(SSEEventFilter.Unreadable) in try handedOver.value.transformed(event) }
        }
        .assumeIsolated().whenComplete { [self] result in
            held.give(charge.bytes, tenant: charge.tenant)
            guard generation == self.generation, let offload = eventOffload, offload.cancelled === cancelled else { return }
            eventOffload = nil
            switch result {
            case .success(.success(let events)?):
                relayEvents(events)
            case .success(.failure(let error)?):
                return endStream("upstream SSE stream closed: \(error)", rule: "sse_event_unreadable")
            case .success(nil):
                return endStream("upstream SSE stream closed: its event's filtering was cancelled", rule: "offload")
            case .failure(let error) where error is DecisionPoolRefused && midSized:
                // The tenant's queue of mid-sized lists is full: filtered here, as it was before its lists were marked
                // (the job never ran, so the filter is the loop's again). The stream never ends for it.
                do throws(SSEEventFilter.Unreadable) {
                    relayEvents(try handedOver.value.transformed(event))
                } catch {
                    return endStream("upstream SSE stream closed: \(error)", rule: "sse_event_unreadable")
                }
            case .failure(let error) where error is DecisionPoolRefused:
                return endStream(
                    "upstream SSE stream closed: this tenant already has \(limit) large answers waiting to be filtered",
                    rule: "large_list_budget")
            case .failure:
                return endStream("upstream SSE stream closed: the gateway is overloaded", rule: "offload")
            }
            // The events that followed it, as they would have gone on (each may be deferred in its turn), unless the
            // stream ended meanwhile (an event unreadable or too large to hold).
            guard eventFilter != nil else { return }
            upstreamResponseBody(ByteBuffer())
            for part in offload.backlog {
                guard eventFilter != nil else { return }
                upstreamResponseBody(part)
            }
            guard eventFilter != nil else { return }
            if offload.ended { return upstreamResponseEnd() }
            if let failure = offload.failure { return upstreamFailed(failure) }
            if eventOffload == nil, let context = self.context { upstream?.setReading(context.channel.isWritable, for: self) }
            if flushPending, let context = self.context {
                flushPending = false
                FlushBatch.flushSoon(context.channel)
            }
        }
    }

    /// Makes this exchange hold `bytes` of answer in all (taking the difference from the tenant's share, or giving it
    /// back); false, holding what it held, when the tenant's share or the total would be passed.
    private func hold(_ bytes: Int) -> Bool {
        guard bytes != heldBytes, let held = services?.upstream.heldBytes else { return true }
        if bytes < heldBytes {
            held.give(heldBytes - bytes, tenant: heldTenant)
        } else {
            if heldBytes == 0 { heldTenant = request?.principal?.tenant ?? "" }
            guard held.take(bytes - heldBytes, tenant: heldTenant) else { return false }
        }
        heldBytes = bytes
        return true
    }

    /// Counts the request body, now `total` bytes long, against its tenant's share of bodies being received (the
    /// first `GatewayLimits.unchargedBodyBytes` of it are not counted); whether it stays within the bounds.
    private func chargeBody(upTo total: Int) -> Bool {
        let wanted = total - GatewayLimits.unchargedBodyBytes
        guard wanted > chargedBodyBytes, let services else { return true }
        if chargedBodyBytes == 0 { chargedBodyTenant = request?.principal?.tenant ?? "" }
        guard services.receivingBodies.take(wanted - chargedBodyBytes, tenant: chargedBodyTenant) else { return false }
        chargedBodyBytes = wanted
        return true
    }

    /// Gives back what this exchange's request body counted against the bodies being received.
    private func releaseBodyCharge() {
        guard chargedBodyBytes > 0 else { return }
        services?.receivingBodies.give(chargedBodyBytes, tenant: chargedBodyTenant)
        chargedBodyBytes = 0
    }

    /// A request body that would take the tenant's (or every tenant's) bodies being received past their bound: `503`
    /// with `Retry-After`, recorded, and the connection closed (the rest of the body is not read). Found by review:
    /// bodies sent mostly at once and then slowly held up to 4 MiB each, on as many connections as a source may open.
    private func refuseReceivingBody() {
        guard let request, let services else { return close() }
        generation += 1
        let limits = services.limits
        var refusal = Refusal(
            status: .serviceUnavailable, id: nil, code: GatewayErrorCode.upstreamUnavailable,
            message: "too many request bytes are on their way in for this tenant; try again",
            headers: [("Retry-After", "1")],
            records: [
                request.record(
                    .unavailable,
                    "request bodies being received reached their bound (\(limits.maximumReceivingBodyBytesPerTenant) bytes per tenant, \(limits.maximumReceivingBodyBytes) in all)",
                    rule: "receiving_body_bytes")
            ])
        refusal.closeConnection = true
        answer(refusal)
    }

    /// A collected answer that would hold more than the tenant's share of held bytes (or the total): `503`.
    private func refuseHeldBytes() {
        refuseCollected(
            .serviceUnavailable, note: "the answers held whole for this tenant (or for all tenants) reached their bound",
            message: "the gateway holds as much of this tenant's answers as it may; try again")
    }

    /// An answer being collected that will not be passed on: the upstream request is cancelled, the record gets
    /// `status` and `note`, and the client gets the gateway's own error under the request's id.
    private func refuseCollected(_ status: HTTPResponseStatus, note: String, message: String) {
        upstream?.cancel(for: self)
        upstream = nil
        finishAudit(status: Int(status.code), note: note)
        answer(
            Refusal(status: status, id: Self.answeredID(plan), code: GatewayErrorCode.upstreamUnavailable, message: message, records: []))
    }

    /// Ends an SSE answer that cannot go on (an event unreadable or too large to hold): recorded, the upstream request
    /// cancelled, and the client's connection closed (the framing of what was relayed cannot be finished cleanly).
    private func endStream(_ reason: String, rule: String, decision: AuditRecord.Decision = .malformed) {
        if let begun = answerBegun { finishAudit(status: begun.status, note: "not completed: \(reason)", answeredAt: begun.at) }
        // Ended once: no later check (a reload, the credentials' expiry) ends it again before the close completes.
        endListening()
        stopOffloadedFiltering()
        recordConnectionRefusal(reason, rule: rule, decision: decision, stream: plan?.records.first)
        eventFilter = nil
        upstream?.cancel(for: self)
        upstream = nil
        // Free for others now: the close itself may wait for a client that does not read (the TLS close).
        releaseBudgets()
        close()
    }

    func upstreamResponseEnd() {
        if eventOffload != nil {
            // After the event being filtered off the loop, and what arrived behind it. The connection is done with this
            // exchange now (back in its pool for the next request, or closing): never paused or cancelled from here
            // again (found by review: another request's stream, on the reused connection, was paused for good).
            eventOffload!.ended = true
            upstream = nil
            return
        }
        if eventFilter != nil {
            guard let rest = try? eventFilter!.finish() else {
                return endStream("upstream SSE stream closed: its last event could not be read", rule: "sse_event_unreadable")
            }
            eventFilter = nil
            if !rest.isEmpty { perform(machine.upstreamBody(ByteBuffer(bytes: rest))) }
        }
        perform(machine.upstreamEnd())
    }

    /// The list filter for this caller and policy snapshot; it teaches the gateway the tools' `Mcp-Param-*` headers.
    private func listFilter(_ requests: [String: ListFilter.Kind]?) -> ListFilter {
        let services = services!
        let principal = request!.principal!
        let policy = services.policy
        var filter = ListFilter(currentPolicy: { policy.snapshot }, principal: principal, requests: requests)
        if requests != nil { filter.requestIDs = plan?.requestIDs ?? [] }
        let headers = services.toolHeaders
        filter.learnTool = { name, schema in headers.learn(tenant: principal.tenant, tool: name, inputSchema: schema) }
        let handles = services.sessionHandles
        filter.sealTask = { handles.seal(task: $0, for: principal) }
        filter.tasks = taskOwnership()
        filter.openListRequestID = { handles.open(listRequestID: $0, for: principal) }
        return filter
    }

    /// Which task ids in this exchange's answer are the caller's (`TaskOwnership`).
    private func taskOwnership() -> TaskOwnership {
        let all = request.flatMap { request in decisions?.tasksAreTheCallers(request) } ?? false
        return TaskOwnership(all: all, named: plan?.ownedTasks ?? [], taskRequests: plan?.taskRequestIDs ?? [])
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        if eventOffload != nil {
            // After the event being filtered off the loop, and what arrived before the failure (the connection is
            // done with this exchange, as at the end).
            eventOffload!.failure = failure
            upstream = nil
            return
        }
        if let services, let tenant = request?.principal?.tenant, let held = services.operationalLogThrottle.admit("upstream/\(tenant)") {
            // An operator must see an upstream that fails, but once a minute per tenant, not once per request.
            services.logger.warning(
                "upstream request failed",
                metadata: ["tenant": "\(tenant)", "error": "\(failure)", "similar.failures.held.back": "\(held)"])
        }
        if let begun = answerBegun {
            finishAudit(
                status: begun.status, note: "not completed: the upstream failed during its answer: \(failure)", answeredAt: begun.at)
        }
        perform(machine.upstreamFailed(failure))
    }

    func upstreamReadComplete() {
        if flushPending, let context {
            flushPending = false
            FlushBatch.flushSoon(context.channel)
        }
    }

    /// Filters a collected list answer and answers with the result. A large one (`offloadListBytes` and up, less for a
    /// costly tenant: `listOffloadBytes`; parsing, deciding every item and writing it again takes long) is filtered on
    /// the decision threads, in its tenant's share of them, so that one tenant's large catalogues asked for in a loop
    /// never hold an event loop.
    private func filterCollected(_ head: HTTPResponseHead, _ body: ByteBuffer) {
        guard let plan, let services, let context, let tenant = request?.principal?.tenant else {
            return answerFiltered(head, Refusal(status: .badGateway, json: "{}", records: []))
        }
        let filter = listFilter(plan.isStream ? nil : plan.listRequests)
        let bound = services.limits.maximumFilteredResponseBytes
        let answeredID = Self.answeredID(plan)
        guard body.readableBytes >= listOffloadBytes() else {
            let started = body.readableBytes >= services.limits.costlyDecisionOffloadBytes ? CostlyTenants.threadCPUNanoseconds() : nil
            let filtered = Self.filteredList(head, body, filter: filter, bound: bound, answeredID: answeredID)
            if let started { noteListFilteringTime(CostlyTenants.threadCPUNanoseconds() - started, bytes: body.readableBytes) }
            return answerFiltered(head, filtered)
        }
        // The upstream has answered in full: only the filtering is still to come, within what is left of the collect
        // timer (the decision threads yield to everything else: on a saturated gateway the wait is bounded by it).
        filteringOffLoop = true
        let cancelled = OffloadCancellation()
        offloadCancellation = cancelled
        // The job holds the answer's bytes until it ends, whatever becomes of the exchange meanwhile (a 504, the
        // client leaving): they stay counted in the tenant's held bytes until then.
        let charge = (bytes: heldBytes, tenant: heldTenant)
        heldBytes = 0
        let held = services.upstream.heldBytes
        let generation = self.generation
        // Lists wait rather than being refused at the tenant's bound of large calls (a fleet of agents of one tenant
        // asks for its catalogue at once): what bounds them is the held bytes they take (each is 1 MiB or more, held
        // until answered) and the collect timer.
        let limit = services.limits.maximumLargeListsPerTenant
        // Under the offload size, off the loop only because the tenant's lists were slow there (`listOffloadBytes`).
        let midSized = body.readableBytes < services.limits.offloadListBytes
        // Handed over whole: the loop does not touch this filter (nor its task ownership) until the result is back.
        let handedOver = HandedOver(filter)
        let queue = midSized ? DecisionPool.midSizedListQueue(of: tenant) : DecisionPool.listQueue(of: tenant)
        DecisionPool.shared.run(for: queue, limit: limit, on: context.eventLoop) { () -> Refusal? in
            // Not begun for an exchange that gave up while it waited.
            guard !cancelled.isSet else { return nil }
            return Self.filteredList(head, body, filter: handedOver.value, bound: bound, answeredID: answeredID)
        }
        .assumeIsolated().whenComplete { [self] result in
            guard filteringOffLoop, generation == self.generation else {
                held.give(charge.bytes, tenant: charge.tenant)
                return
            }
            stopOffloadedFiltering()
            // The exchange's again, until the client has taken its answer.
            heldBytes = charge.bytes
            heldTenant = charge.tenant
            switch result {
            case .success(let filtered?):
                answerFiltered(head, filtered)
            case .success(nil):
                refuseCollected(.serviceUnavailable, note: "the list answer's filtering was cancelled", message: "try again")
            case .failure(let error) where error is DecisionPoolRefused && midSized:
                // The tenant's queue of mid-sized lists is full: filtered here, as it was before its lists were marked
                // (the job never ran, so the filter is the loop's again).
                answerFiltered(head, Self.filteredList(head, body, filter: handedOver.value, bound: bound, answeredID: answeredID))
            case .failure(let error) where error is DecisionPoolRefused:
                refuseCollected(
                    .serviceUnavailable, note: "this tenant already has \(limit) large list answers waiting to be filtered",
                    message: "this tenant already has \(limit) large list answers waiting to be filtered; try again")
            case .failure:
                refuseCollected(.serviceUnavailable, note: "the gateway is overloaded", message: "the gateway is overloaded; try again")
            }
        }
    }

    /// From what size this exchange's list answers and SSE events that must be read are filtered off the loops:
    /// `offloadListBytes`, or `costlyDecisionOffloadBytes` for a tenant whose filtering recently held a loop too long.
    private func listOffloadBytes() -> Int {
        guard let services else { return .max }
        let limits = services.limits
        // Not lowered while the tenant's queue of mid-sized lists is full: they are filtered here then, in the feed,
        // rather than handed over only to be refused and filtered here one by one (found by review: each refusal
        // comes back at once, and went on to defer the next event, one stack level per event).
        guard let tenant = request?.principal?.tenant,
            services.costlyListTenants.isCostly(tenant, now: services.monotonicSeconds),
            !DecisionPool.shared.isFull(DecisionPool.midSizedListQueue(of: tenant), limit: limits.maximumLargeListsPerTenant)
        else { return limits.offloadListBytes }
        return min(limits.offloadListBytes, limits.costlyDecisionOffloadBytes)
    }

    /// Filtering on the loop took `nanoseconds` of the thread's CPU time: if longer than `costlyDecision`, its tenant's
    /// mid-sized list answers and events are filtered off the loops for a while (`CostlyTenants`), so that a catalogue
    /// just under the offload size, asked for over and over, holds a loop once per tenant and minute rather than once
    /// per request.
    private func noteListFilteringTime(_ nanoseconds: Int64, bytes: Int) {
        guard let services, let tenant = request?.principal?.tenant,
            nanoseconds > TimeAmount(services.limits.costlyDecision).nanoseconds,
            services.costlyListTenants.mark(tenant, now: services.monotonicSeconds),
            let held = services.operationalLogThrottle.admit("costly-list/\(tenant)")
        else { return }
        services.logger.notice(
            "filtering a list answer held its event loop too long; this tenant's mid-sized list answers are filtered off the loops for a while",
            metadata: [
                "tenant": "\(tenant)", "answer.bytes": "\(bytes)", "similar.held.back": "\(held)",
                "seconds": "\(Int(CostlyTenants.memory))",
            ])
    }

    /// The exchange no longer waits for its list's filtering: the job is not begun if it has not been (its result,
    /// if any, is dropped; it gives back the bytes it holds when it ends).
    private func stopOffloadedFiltering() {
        filteringOffLoop = false
        offloadCancellation?.set()
        offloadCancellation = nil
        eventOffload?.cancelled.set()
        eventOffload = nil
    }

    /// Records and answers a filtered list answer.
    private func answerFiltered(_ head: HTTPResponseHead, _ filtered: Refusal) {
        finishAudit(
            status: Int(filtered.status.code),
            note: filtered.status == head.status
                ? nil : "the upstream answered \(head.status.code); its answer could not be passed on (see the client's error)")
        answer(filtered)
    }

    /// A collected JSON answer with its list results filtered by `filter`; what cannot be read is refused, never
    /// passed on unfiltered.
    private static func filteredList(
        _ head: HTTPResponseHead, _ body: ByteBuffer, filter: ListFilter, bound: Int, answeredID: JSONValue?
    ) -> Refusal {
        let contentType = head.headers.first(name: "content-type") ?? ""
        let bytes = Array(body.readableBytesView)
        var headers: [(String, String)] = []
        for (index, name) in ResponseFraming.forwardedResponseHeaders.names.enumerated() where name != "content-type" {
            // Of a header that may appear once, only the first (as on relayed answers).
            let single = ResponseFraming.singletonResponseHeaders & (1 << index) != 0
            for value in single ? Array(head.headers[name].prefix(1)) : head.headers[name] { headers.append((name, value)) }
        }
        // Whatever might hold JSON is filtered, whatever its content type says, and refused if it is not JSON-RPC (a
        // byte-order mark or other bytes before the JSON would let a lenient client read an unfiltered list). Only a
        // body without a single `{` or `[` (a `202 Accepted` in plain text) holds no list, and goes on as it came; so
        // does an empty one, whatever its type (a legacy server's `202` with `application/json` and nothing in it).
        let empty = bytes.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard
            !empty && HeaderText.hasPrefix(contentType, "application/json")
                || bytes.contains(where: { $0 == UInt8(ascii: "{") || $0 == UInt8(ascii: "[") })
        else {
            var passed = Refusal(status: head.status, json: "", headers: headers, records: [])
            passed.body = bytes
            passed.contentType = contentType.isEmpty ? "application/octet-stream" : contentType
            return passed
        }
        let filtered: [UInt8]
        do {
            filtered = try filter.filterJSON(bytes, maximumBytes: bound)
        } catch .notJSON where head.status.code >= 300 {
            // An error answer that is not JSON-RPC (an HTML error page, an empty body) carries no list and no id to give
            // back: it goes on as it came, status and headers kept.
            var passed = Refusal(status: head.status, json: "", headers: headers, records: [])
            passed.body = bytes
            passed.contentType = contentType.isEmpty ? "application/octet-stream" : contentType
            return passed
        } catch .notJSON {
            return Refusal(
                status: .badGateway, id: answeredID, code: GatewayErrorCode.upstreamUnavailable,
                message: "upstream list response is not valid JSON-RPC", records: [])
        } catch {
            return Refusal(
                status: .badGateway, id: answeredID, code: GatewayErrorCode.upstreamUnavailable,
                message: "upstream answered with nothing but notifications this caller may not see", records: [])
        }
        return Refusal(status: head.status, json: String(decoding: filtered, as: UTF8.self), headers: headers, records: [])
    }
}

@available(*, unavailable)
extension MCPConnectionHandler: Sendable {}

extension HTTPServerRequestPart {
    /// Whether this part starts a request.
    var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}

/// Sent to every connection on shutdown: close when no request is in flight.
struct GatewayDraining: Sendable {}

/// Fired on every connection when the listener's TLS trust was reloaded.
struct TrustReloaded: Sendable {}

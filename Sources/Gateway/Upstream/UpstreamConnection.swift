import NIOCore
import NIOHTTP1
import TLS

/// Why an upstream request produced no (complete) response.
enum UpstreamFailure: Error, Sendable, Equatable {
    /// Connecting (TCP or TLS) failed or timed out.
    case connect(String)
    /// No response head within the head timeout.
    case headTimeout
    /// A response stream sent nothing for the idle stream timeout.
    case idleTimeout
    /// The connection closed before the response was complete.
    case closed
    /// The upstream broke HTTP framing (a body after a head that declared none, garbage, oversized headers).
    case protocolError(String)
    /// The upstream connection budget is exhausted.
    case connectionBudget

    /// Whether the client should hear 504 (the upstream was too slow) rather than 502.
    var isTimeout: Bool {
        switch self {
        case .headTimeout, .idleTimeout: true
        case .connect(let why): why.contains("timed out") || why.contains("imeout")
        default: false
        }
    }
}

/// Receives one upstream response, part by part, on the connection's event loop.
protocol UpstreamResponseReceiver: AnyObject {
    /// The response head arrived (1xx heads are not passed on).
    func upstreamResponseHead(_ head: HTTPResponseHead)
    /// A piece of the body.
    func upstreamResponseBody(_ part: ByteBuffer)
    /// The response is complete.
    func upstreamResponseEnd()
    /// The response cannot be completed.
    func upstreamFailed(_ failure: UpstreamFailure)
    /// One read from the upstream has been handed over: a good moment to flush what was written.
    func upstreamReadComplete()
}

/// One HTTP/1.1 connection to an upstream, owned by its event loop's pool. It carries one request at a time; after a
/// complete keep-alive response it goes back to the pool, otherwise it closes.
///
/// Written by hand on NIOHTTP1 (rather than async-http-client) so that a request never leaves its event loop, a
/// closed client cancels its upstream request at once, and TLS goes through the gateway's one TLS library. It frames
/// the responses itself (`UpstreamResponseFraming`, told each request's method): one pipeline step fewer for every
/// part of every response than a decoder of its own, and it knows when the parts of a read have all been handled, the
/// moment a finished connection goes back to its pool.
final class UpstreamConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Being connected: only the connect timeout (the bootstrap's) applies.
        case connecting
        case idle(since: NIODeadline)
        case awaitingHead(deadline: NIODeadline, idleTimeout: TimeAmount)
        case streaming(idleTimeout: TimeAmount)
        case closed
    }

    /// The pool key (`UpstreamEndpoint.connectionKey`: the upstream and the tenant).
    let key: String
    private weak var pool: UpstreamPool?
    private var context: ChannelHandlerContext?
    private var receiver: (any UpstreamResponseReceiver)?
    private var phase = Phase.connecting
    private var lastRead = NIODeadline.now()
    /// The time of the latest read (or of the close) whose bytes are being framed: the clock is read once per read,
    /// not once per part. (Parts of a read that arrived while another was handled carry the later one's time.)
    private var readTime = NIODeadline.now()
    private var keepAlive = true
    /// Reading stopped for a slow client; always resumed before the connection carries another request.
    private var readingPaused = false
    private var ticker: RepeatedTask?
    /// How long this connection may sit idle and still be reused: the upstream's configured window, shortened by the
    /// `Keep-Alive: timeout` of the last response that gave one. Past it, an idle connection is closed.
    private var reuseWindow: TimeAmount
    /// The window the upstream's configuration gives (`UpstreamEndpoint.reuseWindow`).
    private let configuredReuseWindow: TimeAmount

    /// The framing of this connection's responses, told the method of each request sent.
    private var framing = UpstreamResponseFraming(
        maximumHeadBytes: UpstreamConnection.maximumResponseHeadBytes, keptHeaders: UpstreamConnection.readResponseHeaders)
    /// Keeps the parts of a read in order when a read or the close arrives while they are handled.
    private let relay = FramedPartsRelay<HTTPClientResponsePart>()
    /// A keep-alive response ended in the read being handled: the connection goes back to its pool once every part
    /// of that read has been handled (bytes after the response surface as a framing error first, and close it).
    private var releaseAfterRead = false
    /// The most bytes a response head may take.
    static let maximumResponseHeadBytes = 1 << 20
    /// The response headers anything reads: those relayed to the client (`ResponseFraming.forwardedResponseHeaders`),
    /// the framing headers the client's framing is built from, `Keep-Alive` (`keepAliveTimeout`) and `Connection` (the
    /// headers it names are not relayed). The others
    /// (`Server`, `Date` and the like) are checked and dropped while the head is read: no string is made of them.
    static let readResponseHeaders = HeaderNames(
        ResponseFraming.forwardedResponseHeaders.names + ["content-length", "transfer-encoding", "keep-alive", "connection"])

    /// Idle connections to this upstream in all pools (this one counts while it sits in its pool).
    let idleConnections: IdleConnectionCount
    /// The connection budget this connection holds, given back once, when it starts closing.
    private var budget: (budgets: UpstreamBudgets, budget: UpstreamBudgets.Budget)?
    /// Where the outcome of this connection's TLS handshake is recorded (under `key`); nil for plain HTTP, and once
    /// recorded.
    private var handshakeOutcomes: UpstreamReachability?
    /// A probe's: called once the handshake ended (the connection then closes) or the connection closed.
    private var probeEnded: (() -> Void)?

    init(
        key: String, pool: UpstreamPool, idleConnections: IdleConnectionCount,
        reuseWindow: TimeAmount = UpstreamConnection.defaultReuseWindow, handshakeRecordedIn reachability: UpstreamReachability? = nil
    ) {
        self.handshakeOutcomes = reachability
        self.key = key
        self.pool = pool
        self.idleConnections = idleConnections
        self.reuseWindow = reuseWindow
        self.configuredReuseWindow = reuseWindow
    }

    /// The connect succeeded (NIO reports it before `channelActive`): the connection is idle, ready for a request,
    /// and holds `budget` of `budgets` until it starts closing (gives it back at once if it already has).
    func opened(holding budget: UpstreamBudgets.Budget, of budgets: UpstreamBudgets) {
        if case .closed = phase {
            budgets.release([budget])
            return
        }
        self.budget = (budgets, budget)
        if let context { startTimers(context: context) }
    }

    private func releaseBudget() {
        guard let held = budget else { return }
        budget = nil
        held.budgets.release([held.budget])
    }

    /// Whether the connection can carry a request now.
    var isUsable: Bool {
        guard let context, context.channel.isActive, case .idle(let since) = phase else { return false }
        // Servers close idle keep-alive connections after a few seconds (uvicorn and Node after 5, gunicorn after 2):
        // one idle for longer may be closing as the request goes out, and a POST cannot be retried safely. Not reused
        // then.
        return isFresh(since: since, now: .now())
    }

    /// Whether a connection idle since `since` may still be reused at `now` (within `reuseWindow`).
    private func isFresh(since: NIODeadline, now: NIODeadline) -> Bool { now - since < reuseWindow }

    /// How long an idle pooled connection may be reused when the upstream's keep-alive timeout is not configured:
    /// below the usual 5 s (uvicorn, Node).
    static let defaultReuseWindow = TimeAmount.seconds(3)

    /// The margin kept below an upstream's keep-alive timeout: a request must reach the upstream before it closes the
    /// connection, and the clocks of the two ends start apart by up to a round trip.
    static let keepAliveMargin = TimeAmount.seconds(1)

    /// The reuse window for an upstream that closes idle connections after `keepAlive`.
    static func reuseWindow(keepAlive: Duration) -> TimeAmount {
        max(.zero, TimeAmount(keepAlive) - keepAliveMargin)
    }

    /// The first `timeout` parameter of a response's `Keep-Alive` headers (`timeout=5, max=100`) that reads as a whole
    /// number of seconds (at most a day); nil when there is none. A hint can only shorten the configured window.
    static func keepAliveTimeout(_ headers: HTTPHeaders) -> Int? {
        for directive in HeaderText.directives(headers, "keep-alive") where directive.name == "timeout" {
            guard let seconds = directive.value, !seconds.isEmpty, seconds.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
            else { continue }
            return Int(seconds).map { min($0, 86_400) } ?? 86_400
        }
        return nil
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { startTimers(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startTimers(context: context)
        context.fireChannelActive()
    }

    /// Connected: the connection is idle until it carries a request, and its timers run from now.
    private func startTimers(context: ChannelHandlerContext) {
        guard ticker == nil else { return }
        if case .connecting = phase { phase = .idle(since: .now()) }
        let tick = UpstreamPool.tickInterval
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in bound.value.checkTimers() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
        self.context = nil
    }

    /// Sends a request, as its bytes (head and body) are; the response goes to `receiver`.
    func send(
        _ request: UpstreamRequest, to receiver: any UpstreamResponseReceiver, headTimeout: TimeAmount, idleTimeout: TimeAmount
    ) {
        guard let context, case .idle = phase else {
            receiver.upstreamFailed(.closed)
            return
        }
        self.receiver = receiver
        // An HTTP/1.1 request without `Connection: close` (the gateway never sends one): the response decides.
        keepAlive = true
        phase = .awaitingHead(deadline: .now() + headTimeout, idleTimeout: idleTimeout)
        framing.requestSent(method: request.method)
        context.write(wrapOutboundOut(request.head), promise: nil)
        if let body = request.separateBody { context.write(wrapOutboundOut(body), promise: nil) }
        FlushBatch.flushSoon(context.channel)
    }

    /// Abandons the request in flight: the receiver hears nothing more, and the connection closes (an unfinished
    /// response cannot be reused).
    func cancel() {
        receiver = nil
        close()
    }

    /// For a probe (`UpstreamPool.probe`): closes once the TLS handshake has ended, at once when there is none (or
    /// it already ended), then calls `ended`. The connection carries no request meanwhile: it is in no pool.
    func closeOnceHandshaken(_ ended: @escaping () -> Void) {
        guard handshakeOutcomes != nil, case .idle = phase else {
            close()
            return ended()
        }
        phase = .connecting
        probeEnded = ended
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSHandshakeCompleted, let outcomes = handshakeOutcomes {
            handshakeOutcomes = nil
            outcomes.reached(key)
            if let ended = probeEnded {
                probeEnded = nil
                close()
                ended()
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// `cancel()` on behalf of `receiver`; nothing once the connection no longer serves it (its response ended, and the
    /// connection may already carry another exchange's request).
    func cancel(for receiver: any UpstreamResponseReceiver) {
        guard self.receiver === receiver else { return }
        cancel()
    }

    /// `setReading(_:)` on behalf of `receiver`; nothing once the connection no longer serves it.
    func setReading(_ reading: Bool, for receiver: any UpstreamResponseReceiver) {
        guard self.receiver === receiver else { return }
        setReading(reading)
    }

    /// Stops or resumes reading the response (backpressure from a slow client). Only a response being read can be
    /// paused: a client that falls behind after the response ended (its last bytes are still being written) must not
    /// leave the connection paused in the pool.
    func setReading(_ reading: Bool) {
        guard let context, reading == readingPaused else { return }
        if !reading {
            guard case .streaming = phase else { return }
        }
        readingPaused = !reading
        if !reading { pool?.statistics.readPauses.wrappingAdd(1, ordering: .relaxed) }
        // Time paused for the client is not the upstream's silence: the idle-stream timeout starts again.
        if reading { lastRead = .now() }
        try? context.channel.syncOptions?.setOption(.autoRead, value: reading)
        if reading { context.read() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readTime = .now()
        relay.read(
            unwrapInboundIn(data), frame: { self.framing.feed($0, $1) }, fire: { self.take($0) },
            fail: { self.framingFailed($0) }, close: { self.connectionClosed(context: context) })
        // Not from inside a read being handled (a read that arrived meanwhile waits for it, and so does this).
        if releaseAfterRead && !relay.isFiring { returnToPool() }
    }

    /// A keep-alive response ended and every part of its read has been handled.
    private func returnToPool() {
        releaseAfterRead = false
        // Failed or closed meanwhile (bytes after the response), or not to be reused (the upstream's keep-alive is
        // shorter than a margin): closed now, not left open.
        guard case .idle(let since) = phase else { return }
        // `since` is this read's time (the response ended in it), so this asks only whether the reuse window is open at
        // all (a `Keep-Alive: timeout` hint can close it); the pool checks the real clock again when it hands the
        // connection out (`isUsable`).
        if let context, context.channel.isActive, isFresh(since: since, now: readTime) { pool?.release(self) } else { close() }
    }

    /// A part of a response, as framed.
    private func take(_ part: HTTPClientResponsePart) {
        // A connection that failed (or was closed) takes nothing more: in particular not the end of a response
        // that its framing infers from the close, after the close was found unclean.
        if case .closed = phase { return }
        // Never back in time: resuming a paused read (`setReading`) may have taken a later reading meanwhile.
        lastRead = max(lastRead, readTime)
        switch part {
        case .head(let head):
            guard case .awaitingHead(_, let idleTimeout) = phase else {
                fail(.protocolError("a response without a request"))
                return
            }
            // The gateway never asks to switch protocols; what follows a 101 is not HTTP.
            guard head.status != .switchingProtocols else {
                fail(.protocolError("upstream answered 101 Switching Protocols"))
                return
            }
            // What the head's options say, and a body read up to the close leaves nothing to reuse (read by the
            // framing from the field bytes; this is the one response outstanding, the last head of the read).
            keepAlive = keepAlive && framing.responseKeepsConnection
            if let seconds = Self.keepAliveTimeout(head.headers) {
                reuseWindow = min(configuredReuseWindow, Self.reuseWindow(keepAlive: .seconds(seconds)))
            }
            phase = .streaming(idleTimeout: idleTimeout)
            receiver?.upstreamResponseHead(head)
        case .body(let part):
            receiver?.upstreamResponseBody(part)
        case .end:
            let finished = receiver
            receiver = nil
            phase = .idle(since: readTime)
            // A connection paused for a slow client must read again before it serves anyone else.
            setReading(true)
            if keepAlive {
                // Back to the pool only after this read has been fully framed: bytes after the response (a body
                // where none was declared) surface as a framing error first and close the connection instead.
                releaseAfterRead = true
            } else {
                close()
            }
            finished?.upstreamResponseEnd()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        receiver?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Before the handshake ended: the TLS handshake failed (or the connection broke during it).
        handshakeFailed("\(error)")
        fail(.protocolError("\(error)"))
    }

    /// Records that the TLS handshake failed, and why, if it had not ended yet (nothing for plain HTTP).
    private func handshakeFailed(_ reason: String) {
        guard let outcomes = handshakeOutcomes else { return }
        handshakeOutcomes = nil
        outcomes.failed(key, error: "TLS handshake: \(reason)")
    }

    private func framingFailed(_ error: HTTPFramingError) {
        fail(.protocolError("invalid HTTP from upstream: \(error)"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        // After the parts of a read being handled now, if any; the close ends a body read up to it, or cuts a response
        // short (an error).
        relay.closed { connectionClosed(context: context) }
    }

    private func connectionClosed(context: ChannelHandlerContext) {
        readTime = .now()
        // Closed by the upstream before the TLS handshake ended (a FIN with no alert): the handshake failed. One the
        // gateway closed itself (a cancelled request, shutdown) says nothing of the upstream.
        if case .closed = phase {
            handshakeOutcomes = nil
        } else {
            handshakeFailed("the upstream closed the connection")
        }
        relay.close(frame: { self.framing.closed($0) }, fire: { self.take($0) }, fail: { self.framingFailed($0) })
        releaseAfterRead = false
        phase = .closed
        releaseBudget()
        if let receiver {
            self.receiver = nil
            receiver.upstreamFailed(.closed)
        }
        if let ended = probeEnded {
            probeEnded = nil
            ended()
        }
        pool?.remove(self)
        context.fireChannelInactive()
    }

    private func fail(_ failure: UpstreamFailure) {
        let receiver = self.receiver
        self.receiver = nil
        close()
        receiver?.upstreamFailed(failure)
    }

    private func close() {
        if case .closed = phase { return }
        phase = .closed
        releaseBudget()
        context?.close(promise: nil)
    }

    private func checkTimers() {
        let now = NIODeadline.now()
        switch phase {
        case .connecting:
            break
        case .idle(let since):
            // No longer to be reused: closed, which frees the upstream's side too.
            if now - since >= reuseWindow { close() }
        case .awaitingHead(let deadline, _):
            guard now >= deadline else { break }
            // An upstream that never finished the handshake in that time is not reachable.
            handshakeFailed("no answer before the response head timeout")
            fail(.headTimeout)
        case .streaming(let idleTimeout):
            // Paused for a slow client, the upstream is not silent: it is not being read.
            if !readingPaused, now - lastRead > idleTimeout { fail(.idleTimeout) }
        case .closed:
            break
        }
    }
}

@available(*, unavailable)
extension UpstreamConnection: Sendable {}

import NIOCore

/// Every deadline a client connection is held to, in one pipeline step (one step fewer for every read, write and
/// flush of every request than a handler per deadline):
///
/// - **Idle:** no bytes read or written for `idleTimeout` sends `ConnectionIdle` up the pipeline.
/// - **Request head:** the whole head must arrive within `headTimeout` from its first byte.
/// - **Body rate:** after `gracePeriod`, a body must keep `minimumBytesPerSecond` of its own bytes (not its chunk
///   framing; the connection handler reports them, `bodyBytesReceived`) over every window of `gracePeriod` (so a body
///   sent mostly at once and then held back is cut a window after it stops, not once its average since the start
///   runs out); not while the caller's credentials are being checked.
///
/// - **Answer rate:** once the client falls behind (its socket stops taking what is written), it must take at least
///   `minimumAnswerBytesPerSecond` over each `answerRateWindow` in which it is behind; a client reading at a trickle
///   would otherwise hold its request, its upstream connection and its tenant's budgets as long as it liked (it reads
///   something every idle timeout, so it is never idle). Not watched at all until the socket first fills.
///
/// A slow client sends `SlowClientDetected` up the pipeline. The connection handler records and closes on either
/// event. Sits below the HTTP decoder, so it sees every byte as it arrives; the connection handler tells it where the
/// request is (`headReceived`, `bodyReceived`, `exchangeFinished`).
///
/// NIO's `IdleStateHandler` attaches a promise to every write to learn when it completes: two allocations per
/// response part. Here a write counts when it is issued. A client that stops reading cannot hold the connection busy
/// with writes that never complete: the gateway stops relaying when the socket is not writable, so no further writes
/// are issued and the connection goes idle. The idle timer is one per connection, re-armed for the time left when it
/// fires early; the head and body timers are armed only when a head or body spans reads, so the common request, whole
/// in one read, arms none. Times come from the event loop's clock (`EventLoop.now`).
final class ClientDeadlines: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        /// Between requests: the head deadline starts with the next byte.
        case awaitingHead(timer: Scheduled<Void>?)
        /// Reading a body: bytes counted since `start`; the rate check runs once the body spans more than one read.
        case readingBody(start: NIODeadline, bytes: Int, check: RepeatedTask?)
        /// A request is being handled; only the idle timer runs.
        case busy
    }

    private let idleTimeout: TimeAmount
    private let headTimeout: TimeAmount
    private let minimumBytesPerSecond: Int
    private let gracePeriod: TimeAmount
    private var phase = Phase.awaitingHead(timer: nil)
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    /// Set by `connectionClosing()`.
    private var closing = false
    private var idleTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// Whether a read is being passed up the pipeline now.
    private var reading = false
    /// Whether an exchange finished while the current read was passed up (a request, or the rest of its body, in
    /// this read, answered before the read returned).
    private var exchangeEndedInThisRead = false
    /// The credentials are being checked (off the loop): the body rate is not checked meanwhile.
    private var authenticating = false
    /// The body bytes counted at the start of the rate's window, and when; the counts taken at later checks follow,
    /// oldest first, each becoming the window's start once it is `gracePeriod` old.
    private var rateWindowStart = (at: NIODeadline.uptimeNanoseconds(0), bytes: 0)
    private var rateSamples: [(at: NIODeadline, bytes: Int)] = []
    private let minimumAnswerBytesPerSecond: Int
    private let answerRateWindow: TimeAmount
    /// Runs while the client is behind (from the first time its socket fills): every `answerRateWindow`.
    private var answerRateCheck: RepeatedTask?
    /// Bytes written since the last answer-rate check (counted only while the check runs).
    private var writtenSinceCheck = 0
    /// Whether the socket was full at some point since the last answer-rate check.
    private var behindSinceCheck = false

    /// Deadlines for one client connection.
    init(
        idleTimeout: TimeAmount, headTimeout: TimeAmount, minimumBytesPerSecond: Int, gracePeriod: TimeAmount,
        minimumAnswerBytesPerSecond: Int = 1024, answerRateWindow: TimeAmount = .seconds(30)
    ) {
        self.idleTimeout = idleTimeout
        self.headTimeout = headTimeout
        self.minimumBytesPerSecond = minimumBytesPerSecond
        self.gracePeriod = gracePeriod
        self.minimumAnswerBytesPerSecond = minimumAnswerBytesPerSecond
        self.answerRateWindow = answerRateWindow
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastActivity = context.eventLoop.now
        if context.channel.isActive { armIdle(context: context, in: idleTimeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimers()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        if idleTimer == nil { armIdle(context: context, in: idleTimeout) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopTimers()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // What a closing connection reads is dropped: it keeps nothing alive (a client that never takes the last
        // answer but sends a byte now and then would otherwise hold the connection for good).
        if !closing { lastActivity = context.eventLoop.now }
        (reading, exchangeEndedInThisRead) = (true, false)
        context.fireChannelRead(data)
        reading = false
        switch phase {
        case .awaitingHead(nil) where !exchangeEndedInThisRead:
            // Bytes arrived and no head came of them: the head deadline runs from now. (An exchange that ended in
            // this read leaves nothing known to be waiting; bytes of a next head that came with it are left to the
            // idle timeout.)
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let timer = context.eventLoop.scheduleTask(in: headTimeout) { bound.value.fire(.headTimeout) }
            phase = .awaitingHead(timer: timer)
        case .readingBody(_, _, nil):
            armBodyRateCheck(context: context)
        default:
            break
        }
    }

    /// The body rate is checked from `gracePeriod` after the head on, every second.
    private func armBodyRateCheck(context: ChannelHandlerContext) {
        guard case .readingBody(let start, let bytes, nil) = phase else { return }
        rateWindowStart = (start, 0)
        rateSamples.removeAll(keepingCapacity: true)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let elapsed = clock - start
        let check = context.eventLoop.scheduleRepeatedTask(
            initialDelay: max(.zero, gracePeriod - elapsed), delay: .seconds(1)
        ) { _ in bound.value.checkBodyRate() }
        phase = .readingBody(start: start, bytes: bytes, check: check)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = context.eventLoop.now
        if answerRateCheck != nil { writtenSinceCheck += unwrapOutboundIn(data).readableBytes }
        context.write(data, promise: promise)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable {
            behindSinceCheck = true
            if answerRateCheck == nil {
                writtenSinceCheck = 0
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                answerRateCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: answerRateWindow, delay: answerRateWindow) { _ in
                    bound.value.checkAnswerRate()
                }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Every `answerRateWindow` while the client is behind: too little taken in a window it spent behind is slow; a
    /// window it never fell behind in ends the watch (until its socket fills again).
    private func checkAnswerRate() {
        guard let context else { return }
        let behind = behindSinceCheck || !context.channel.isWritable
        let seconds = Double(answerRateWindow.nanoseconds) / 1e9
        // Cut only a client still behind now: one that took everything (its socket writable again) is not slow, however
        // little was written since (found by review: one large answer, read at once, filled the socket for a moment,
        // and the fast client's next call was cut 30 s later).
        if !context.channel.isWritable && Double(writtenSinceCheck) < Double(minimumAnswerBytesPerSecond) * seconds {
            stopAnswerRateCheck()
            context.fireUserInboundEventTriggered(SlowClientDetected.answerTooSlow)
            return
        }
        if !behind { stopAnswerRateCheck() }
        writtenSinceCheck = 0
        behindSinceCheck = !context.channel.isWritable
    }

    private func stopAnswerRateCheck() {
        answerRateCheck?.cancel()
        answerRateCheck = nil
    }

    /// The request head is complete; `expectsBody`: a body follows, whose rate is now watched. (A head taken from
    /// the pipelining queue, outside a read, has its check armed at once: no read may ever come to arm it.)
    func headReceived(expectsBody: Bool) {
        stopRequestTimers()
        authenticating = false
        phase = expectsBody ? .readingBody(start: clock, bytes: 0, check: nil) : .busy
        if expectsBody, !reading, let context { armBodyRateCheck(context: context) }
    }

    /// `count` bytes of the request body arrived. Only a body's own bytes count toward its rate, never its framing:
    /// chunks of one byte behind sizes padded with zeros took 21 bytes read for each byte of body, so a body could
    /// pass the check at a twentieth of the rate (found by review: 4 MiB held for a day instead of about an hour).
    func bodyBytesReceived(_ count: Int) {
        guard case .readingBody(let start, let bytes, let check) = phase else { return }
        phase = .readingBody(start: start, bytes: bytes + count, check: check)
    }

    /// The request body is complete.
    func bodyReceived() {
        stopRequestTimers()
        phase = .busy
    }

    /// The connection is closing: what it reads from now on no longer counts as activity.
    func connectionClosing() { closing = true }

    /// The response is complete; the next request's head is awaited.
    func exchangeFinished() {
        if reading { exchangeEndedInThisRead = true }
        stopRequestTimers()
        phase = .awaitingHead(timer: nil)
    }

    private func armIdle(context: ChannelHandlerContext, in delay: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            handler.idleTimerFired(context: context)
        }
    }

    private func idleTimerFired(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let quiet = context.eventLoop.now - lastActivity
        if quiet >= idleTimeout {
            armIdle(context: context, in: idleTimeout)
            context.fireUserInboundEventTriggered(ConnectionIdle())
        } else {
            armIdle(context: context, in: idleTimeout - quiet)
        }
    }

    /// The caller's credentials are accepted: the body rate is measured from now, with its grace period again (found
    /// by review: credentials checked for longer than the grace period, while the gateway read no body or the client
    /// waited for `100 Continue`, had a good client cut as slow).
    func authenticationFinished() {
        authenticating = false
        guard case .readingBody(_, _, let check) = phase else { return }
        check?.cancel()
        phase = .readingBody(start: clock, bytes: 0, check: nil)
        // Inside a read, the check is armed when the read has been handled.
        if !reading, let context { armBodyRateCheck(context: context) }
    }

    /// The event loop's clock.
    private var clock: NIODeadline { context?.eventLoop.now ?? .now() }

    /// The caller's credentials are being checked off the loop: no body rate until `authenticationFinished` (found by
    /// review: a check that took longer than the grace period had a good client cut as slow before it was told to send).
    func authenticationStarted() { authenticating = true }

    private func checkBodyRate() {
        guard case .readingBody(_, let bytes, _) = phase, !authenticating else { return }
        let now = clock
        // The window: from the newest count that is at least `gracePeriod` old (found by review: with the average
        // since the start, 4 MiB sent at once and then nothing held the connection and its memory for 68 minutes).
        while let oldest = rateSamples.first, oldest.at <= now - gracePeriod {
            rateWindowStart = oldest
            rateSamples.removeFirst()
        }
        let seconds = Double((now - rateWindowStart.at).nanoseconds) / 1e9
        if Double(bytes - rateWindowStart.bytes) < Double(minimumBytesPerSecond) * seconds { return fire(.bodyTooSlow) }
        rateSamples.append((now, bytes))
    }

    private func fire(_ kind: SlowClientDetected) {
        stopRequestTimers()
        phase = .busy
        context?.fireUserInboundEventTriggered(kind)
    }

    private func stopRequestTimers() {
        switch phase {
        case .awaitingHead(let timer?): timer.cancel()
        case .readingBody(_, _, let check?): check.cancel()
        default: break
        }
    }

    private func stopTimers() {
        stopRequestTimers()
        stopAnswerRateCheck()
        idleTimer?.cancel()
        idleTimer = nil
    }
}

@available(*, unavailable)
extension ClientDeadlines: Sendable {}

/// A client too slow to be served: sent up the pipeline by `ClientDeadlines`.
enum SlowClientDetected: Sendable {
    /// The request head did not arrive within the head deadline.
    case headTimeout
    /// The body arrived slower than the minimum rate.
    case bodyTooSlow
    /// The client, behind, took its answer slower than the minimum rate.
    case answerTooSlow
}

/// No bytes have been read from or written to the connection for the idle timeout: sent up the pipeline by
/// `ClientDeadlines`.
struct ConnectionIdle: Sendable {}

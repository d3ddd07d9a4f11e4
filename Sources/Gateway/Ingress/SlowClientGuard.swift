import NIOCore

/// Cuts clients that send a request too slowly, independently of the idle timer: the whole request head must
/// arrive within a deadline from its first byte, and a body must keep a minimum average rate after a grace period.
/// Sits below the HTTP decoder, so it sees every byte as it arrives; the connection handler tells it where the
/// request is. When it fires, it sends `SlowClientDetected` up the pipeline (the connection handler records it and
/// closes the connection).
final class SlowClientGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum Phase {
        /// Between requests: the deadline starts with the next byte.
        case awaitingHead(timer: Scheduled<Void>?)
        /// Reading a body: bytes counted since `start`; the rate check runs once the body spans more than one read.
        case readingBody(start: NIODeadline, bytes: Int, check: RepeatedTask?)
        /// A request is being handled; nothing to watch.
        case busy
    }

    private let headTimeout: TimeAmount
    private let minimumBytesPerSecond: Int
    private let gracePeriod: TimeAmount
    private var phase = Phase.awaitingHead(timer: nil)
    private var context: ChannelHandlerContext?

    init(headTimeout: TimeAmount, minimumBytesPerSecond: Int, gracePeriod: TimeAmount) {
        self.headTimeout = headTimeout
        self.minimumBytesPerSecond = minimumBytesPerSecond
        self.gracePeriod = gracePeriod
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimers()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopTimers()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .readingBody(let start, let bytes, let check) = phase {
            phase = .readingBody(start: start, bytes: bytes + unwrapInboundIn(data).readableBytes, check: check)
        }
        context.fireChannelRead(data)
        // Timers are armed only when a head or body spans reads: the common request, whole in one read, costs none.
        switch phase {
        case .awaitingHead(nil):
            // Bytes arrived and no head came of them: the head deadline runs from now.
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let timer = context.eventLoop.scheduleTask(in: headTimeout) { bound.value.fire(.headTimeout) }
            phase = .awaitingHead(timer: timer)
        case .readingBody(let start, let bytes, nil):
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let elapsed = NIODeadline.now() - start
            let check = context.eventLoop.scheduleRepeatedTask(
                initialDelay: max(.zero, gracePeriod - elapsed), delay: .seconds(1)
            ) { _ in bound.value.checkBodyRate() }
            phase = .readingBody(start: start, bytes: bytes, check: check)
        default:
            break
        }
    }

    /// The request head is complete; `expectsBody`: a body follows, whose rate is now watched.
    func headReceived(expectsBody: Bool) {
        stopTimers()
        phase = expectsBody ? .readingBody(start: .now(), bytes: 0, check: nil) : .busy
    }

    /// The request body is complete.
    func bodyReceived() {
        stopTimers()
        phase = .busy
    }

    /// The response is complete; the next request's head is awaited.
    func exchangeFinished() {
        stopTimers()
        phase = .awaitingHead(timer: nil)
    }

    private func checkBodyRate() {
        guard case .readingBody(let start, let bytes, _) = phase else { return }
        let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        if Double(bytes) < Double(minimumBytesPerSecond) * seconds { fire(.bodyTooSlow) }
    }

    private func fire(_ kind: SlowClientDetected) {
        stopTimers()
        phase = .busy
        context?.fireUserInboundEventTriggered(kind)
    }

    private func stopTimers() {
        switch phase {
        case .awaitingHead(let timer?): timer.cancel()
        case .readingBody(_, _, let check?): check.cancel()
        default: break
        }
    }
}

@available(*, unavailable)
extension SlowClientGuard: Sendable {}

/// A client too slow to be served: sent up the pipeline by `SlowClientGuard`.
enum SlowClientDetected: Sendable {
    /// The request head did not arrive within the head deadline.
    case headTimeout
    /// The body arrived slower than the minimum rate.
    case bodyTooSlow
}

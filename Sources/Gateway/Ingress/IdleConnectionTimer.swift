import NIOCore

/// Tells the connection handler (`ConnectionIdle`) when no bytes have been read or written for `timeout`.
///
/// NIO's `IdleStateHandler` does the same but attaches a promise to every write to learn when it completes: two
/// allocations per response part on the hot path. Here a write counts when it is issued. A client that stops reading
/// cannot hold the connection busy with writes that never complete: the gateway stops relaying when the socket is not
/// writable, so no further writes are issued and the connection goes idle. One timer per connection, re-armed for the
/// time left when it fires early; times come from the event loop's clock (`EventLoop.now`).
final class IdleConnectionTimer: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private let timeout: TimeAmount
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    private var timer: Scheduled<Void>?

    /// A timer for connections idle for `timeout`.
    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        if context.channel.isActive { arm(context: context, in: timeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        if timer == nil { arm(context: context, in: timeout) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = context.eventLoop.now
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = context.eventLoop.now
        context.write(data, promise: promise)
    }

    private func arm(context: ChannelHandlerContext, in delay: TimeAmount) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = bound.value
            handler.fire(context: context)
        }
    }

    private func fire(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let quiet = context.eventLoop.now - lastActivity
        if quiet >= timeout {
            arm(context: context, in: timeout)
            context.fireUserInboundEventTriggered(ConnectionIdle())
        } else {
            arm(context: context, in: timeout - quiet)
        }
    }
}

@available(*, unavailable)
extension IdleConnectionTimer: Sendable {}

/// No bytes have been read from or written to the connection for the idle timeout.
struct ConnectionIdle: Sendable {}

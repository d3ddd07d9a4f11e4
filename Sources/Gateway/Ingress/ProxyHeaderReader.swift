import NIOCore

/// The first handler of a connection from a trusted proxy (`ProxyProtocolSettings`): it reads the PROXY protocol
/// header (`ProxyProtocolHeader`) within `deadline`, then has `install` add the connection's handlers as for a client
/// that connected directly, told the client's address, hands them what followed the header, and leaves the pipeline.
/// Until then nothing else runs: no TLS, no HTTP. A connection without a valid header is closed (`refused` says why);
/// one that closes before sending a byte (a load balancer's TCP health check) is closed quietly.
final class ProxyHeaderReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Adds the connection's handlers for `client` (nil: the proxy's own address); false when the connection is not to
    /// be served after all (its source holds its share), and is closed.
    typealias Install = (_ context: ChannelHandlerContext, _ client: SocketAddress?) throws -> Bool

    private let deadline: TimeAmount
    private let install: Install
    private let refused: (_ reason: String, _ peer: SocketAddress?) -> Void
    private var received: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var finished = false

    init(deadline: TimeAmount, install: @escaping Install, refused: @escaping (_ reason: String, _ peer: SocketAddress?) -> Void) {
        self.deadline = deadline
        self.install = install
        self.refused = refused
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard timer == nil, !finished else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: deadline) {
            let (reader, context) = bound.value
            reader.refuse("no whole PROXY protocol header within \(reader.deadline.nanoseconds / 1_000_000_000) s", context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return context.fireChannelRead(data) }
        var bytes = unwrapInboundIn(data)
        if received == nil {
            received = bytes
        } else {
            received!.writeBuffer(&bytes)
        }
        let parse = received!.withUnsafeReadableBytes { ProxyProtocolHeader.parse($0) }
        switch parse {
        case .incomplete:
            return
        case .invalid(let why):
            refuse(why, context)
        case .header(let length, let source):
            var rest = received!
            rest.moveReaderIndex(forwardBy: length)
            let installed: Bool
            do {
                installed = try install(context, source ?? context.channel.remoteAddress)
            } catch {
                // Found by review: `finished` was set first, and this refusal did nothing.
                refuse("cannot set the connection up: \(error)", context)
                return
            }
            finished = true
            received = nil
            timer?.cancel()
            timer = nil
            guard installed else { return context.close(promise: nil) }
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    /// Shutdown began while the header was on its way: nothing is in flight on the connection, which closes now (found
    /// by review: its handlers, added later, never heard of the drain and served on until the grace period ended).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !finished, event is GatewayDraining {
            finished = true
            received = nil
            timer?.cancel()
            timer = nil
            return context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        // Closed before the header was whole: said only when something was sent (a health check sends nothing).
        if !finished, received != nil {
            finished = true
            refused("the connection closed before its PROXY protocol header was whole", context.channel.remoteAddress)
        }
        finished = true
        context.fireChannelInactive()
    }

    private func refuse(_ why: String, _ context: ChannelHandlerContext) {
        guard !finished else { return }
        finished = true
        received = nil
        timer?.cancel()
        timer = nil
        refused(why, context.channel.remoteAddress)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ProxyHeaderReader: Sendable {}

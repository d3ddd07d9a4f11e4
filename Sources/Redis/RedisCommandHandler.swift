import NIOCore

/// The client's end of one Redis connection: sends commands as they come (pipelining) and hands each reply to the
/// command that waits for it, in order — Redis answers the commands of one connection in the order they were sent.
///
/// A reply that is not RESP, a command left unanswered past its deadline, or a closed connection fails every
/// waiting command and closes the connection: after any of these, replies could no longer be matched to commands.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Command
    typealias OutboundOut = ByteBuffer

    /// One command and where its reply goes.
    struct Command {
        let arguments: [[UInt8]]
        let promise: EventLoopPromise<RESPValue>
        let deadline: NIODeadline
    }

    private let parser: RESPParser
    /// Where the look for the end of the reply being received stopped.
    private var completeness: RESPCompleteness
    /// Most bytes of replies held at once (a complete reply or the start of one). The gateway's replies are a few
    /// dozen bytes; a peer sending more is not the Redis this client talks to.
    static let maximumBufferedBytes = 64 * 1024
    private var waiting = CircularBuffer<(promise: EventLoopPromise<RESPValue>, deadline: NIODeadline)>()
    private var received: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var failure: RedisError?

    init(parser: RESPParser = RESPParser()) {
        self.parser = parser
        completeness = RESPCompleteness(parser: parser)
    }

    /// Commands sent and not yet answered.
    var pending: Int { waiting.count }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        if let failure {
            command.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPValue.writeCommand(command.arguments, into: &buffer)
        waiting.append((command.promise, command.deadline))
        if waiting.count == 1 { armTimer(context: context) }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        // Bytes with no command waiting can only be nonsense (or a server pushing what was not asked for).
        guard !waiting.isEmpty else { return fail(context: context, .protocolError("bytes arrived that no command asked for")) }
        if received == nil || received!.readableBytes == 0 {
            received = bytes
        } else {
            received!.writeBuffer(&bytes)
        }
        do {
            while var buffer = received, completeness.isWhole(buffer.readableBytesView), let value = try parser.next(&buffer) {
                completeness.reset()
                received = buffer
                guard let next = waiting.popFirst() else {
                    return fail(context: context, .protocolError("a reply came that no command asked for"))
                }
                next.promise.succeed(value)
                armTimer(context: context)
            }
            if received!.readableBytes == 0 {
                received = nil
            } else if received!.readableBytes > Self.maximumBufferedBytes {
                fail(context: context, .protocolError("a reply larger than \(Self.maximumBufferedBytes) bytes"))
            } else {
                received!.discardReadBytes()
            }
        } catch {
            fail(context: context, .protocolError(error.reason))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, .connectionFailed("\(error)"))
    }

    /// Fails every waiting command with `error` and closes the connection.
    func fail(context: ChannelHandlerContext, _ error: RedisError) {
        failure = failure ?? error
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        failure = failure ?? error
        timer?.cancel()
        timer = nil
        while let next = waiting.popFirst() { next.promise.fail(error) }
    }

    /// One timer, for the oldest unanswered command: later commands cannot be answered before it anyway.
    private func armTimer(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        guard let oldest = waiting.first else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: oldest.deadline) {
            let (handler, context) = loopBound.value
            handler.fail(context: context, .timedOut)
        }
    }
}

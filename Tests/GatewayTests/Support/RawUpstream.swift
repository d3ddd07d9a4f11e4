import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An upstream that answers each request with exactly the bytes it is given, framing and all, and records when its
/// connections close: for tests of what the gateway does with upstreams that break HTTP.
final class RawUpstream: Sendable {
    let channel: any Channel
    let requests = NIOLockedValueBox<[String]>([])
    let closes = NIOLockedValueBox<[ContinuousClock.Instant]>([])
    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)/mcp" }

    private init(channel: any Channel) { self.channel = channel }

    /// `answer(request)` → bytes to write (nil: never answer), written after `delay`.
    static func start(delay: TimeAmount = .zero, _ answer: @escaping @Sendable (String) -> String?) async throws -> RawUpstream {
        let box = NIOLockedValueBox<RawUpstream?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(owner: box, delay: delay, answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = RawUpstream(channel: channel)
        box.withLockedValue { $0 = upstream }
        return upstream
    }

    func stop() async { try? await channel.close() }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let owner: NIOLockedValueBox<RawUpstream?>
        let answer: @Sendable (String) -> String?
        let delay: TimeAmount
        var pending = ""

        init(owner: NIOLockedValueBox<RawUpstream?>, delay: TimeAmount, answer: @escaping @Sendable (String) -> String?) {
            self.owner = owner
            self.delay = delay
            self.answer = answer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            pending += String(buffer: unwrapInboundIn(data))
            // One request = head + Content-Length bytes.
            while let headEnd = pending.range(of: "\r\n\r\n") {
                let head = pending[..<headEnd.lowerBound]
                let length =
                    head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                let bodyStart = headEnd.upperBound
                guard pending.utf8.distance(from: bodyStart, to: pending.endIndex) >= length else { return }
                let end = pending.utf8.index(bodyStart, offsetBy: length)
                let request = String(pending[..<end])
                pending = String(pending[end...])
                owner.withLockedValue { $0?.requests.withLockedValue { $0.append(request) } }
                if let bytes = answer(request) {
                    if delay == .zero {
                        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: bytes)), promise: nil)
                    } else {
                        let channel = context.channel
                        context.eventLoop.scheduleTask(in: delay) { channel.writeAndFlush(ByteBuffer(string: bytes), promise: nil) }
                    }
                }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            owner.withLockedValue { $0?.closes.withLockedValue { $0.append(.now) } }
        }
    }
}

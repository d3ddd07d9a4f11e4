import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TLS

/// A test upstream that records every request (headers and body) and answers as told: JSON, a gated SSE stream,
/// or not at all.
final class RecordingUpstream: Sendable {
    enum Behaviour: Sendable {
        /// `{"jsonrpc":"2.0","id":<id>,"result":{"ok":true}}`, or 202 for notifications.
        case json
        /// An SSE response: a first event at once, the second only after `release()`.
        case gatedStream
        /// An SSE response: `first` (SSE text) at once, `afterRelease` only after `release()`, then the end.
        case gatedEvents(first: String, afterRelease: String)
        /// Never answers.
        case hang
        /// Closes the connection without answering.
        case close
        /// Answers what the closure says: content type and body (status 200), for the request recorded.
        case custom(@Sendable (Request) -> (contentType: String, body: String))
        /// Answers with the status, content type and body the closure says.
        case withStatus(@Sendable (Request) -> (status: Int, contentType: String, body: String))
        /// Answers 200 with the content type and body chunks the closure says, chunked, all in one write.
        case chunks(@Sendable (Request) -> (contentType: String, chunks: [String]))
        /// Answers each request as the behaviour the closure picks for it says.
        indirect case routed(@Sendable (Request) -> Behaviour)
        /// `chunks`, and then `written` once they are written.
        case chunksThen(@Sendable (Request) -> (contentType: String, chunks: [String]), written: @Sendable () -> Void)
    }

    struct Request: Sendable {
        let method: String
        let headers: [(String, String)]
        let body: String
        /// The request target (path and query).
        var uri = ""
        /// The port the gateway's side of the connection had (which connection carried the request).
        var peerPort: Int?
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    let channel: any Channel
    let requests = NIOLockedValueBox<[Request]>([])
    let gate: EventLoopPromise<Void>
    let secure: Bool
    let host: String
    var url: String {
        let port = channel.localAddress!.port!
        return secure ? "https://\(host == "127.0.0.1" ? "localhost" : host):\(port)/mcp" : "http://\(host):\(port)/mcp"
    }
    var received: [Request] { requests.withLockedValue { $0 } }

    private init(channel: any Channel, gate: EventLoopPromise<Void>, secure: Bool, host: String) {
        self.host = host
        self.channel = channel
        self.gate = gate
        self.secure = secure
    }

    /// `tls`: serve HTTPS with this server context (the URL then names `localhost`). `port` 0: one of the kernel's
    /// choice.
    static func start(
        _ behaviour: Behaviour, tls: TLSContext? = nil, host: String = "127.0.0.1", port: Int = 0
    ) async throws -> RecordingUpstream {
        let group = MultiThreadedEventLoopGroup.singleton
        let gate = group.next().makePromise(of: Void.self)
        let box = NIOLockedValueBox<RecordingUpstream?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(TLSHandler(context: tls, logger: Logger(label: "upstream-tls")))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(behaviour: behaviour, owner: box, gate: gate.futureResult))
                }
            }
            .bind(host: host, port: port).get()
        let upstream = RecordingUpstream(channel: channel, gate: gate, secure: tls != nil, host: host)
        box.withLockedValue { $0 = upstream }
        return upstream
    }

    func release() { gate.succeed(()) }

    func stop() async {
        gate.succeed(())
        try? await channel.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let behaviour: Behaviour
        let owner: NIOLockedValueBox<RecordingUpstream?>
        let gate: EventLoopFuture<Void>
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(behaviour: Behaviour, owner: NIOLockedValueBox<RecordingUpstream?>, gate: EventLoopFuture<Void>) {
            self.behaviour = behaviour
            self.owner = owner
            self.gate = gate
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                let text = String(buffer: body)
                owner.withLockedValue {
                    $0?.requests.withLockedValue {
                        $0.append(
                            Request(
                                method: head.method.rawValue, headers: head.headers.map { ($0.name, $0.value) }, body: text, uri: head.uri,
                                peerPort: context.channel.remoteAddress?.port))
                    }
                }
                respond(context: context, head: head, body: text)
            }
        }

        func respond(context: ChannelHandlerContext, head: HTTPRequestHead, body: String) {
            respond(context: context, head: head, body: body, as: behaviour)
        }

        func respond(context: ChannelHandlerContext, head: HTTPRequestHead, body: String, as behaviour: Behaviour) {
            var answered: (status: Int, contentType: String, body: String)?
            let recorded = Request(
                method: head.method.rawValue, headers: head.headers.map { ($0.name, $0.value) }, body: body, uri: head.uri,
                peerPort: context.channel.remoteAddress?.port)
            if case .routed(let route) = behaviour { return respond(context: context, head: head, body: body, as: route(recorded)) }
            var chunked: (answer: @Sendable (Request) -> (contentType: String, chunks: [String]), written: (@Sendable () -> Void)?)?
            if case .chunks(let answer) = behaviour { chunked = (answer, nil) }
            if case .chunksThen(let answer, let written) = behaviour { chunked = (answer, written) }
            if case .custom(let answer) = behaviour {
                let (type, text) = answer(recorded)
                answered = (200, type, text)
            }
            if case .withStatus(let answer) = behaviour { answered = answer(recorded) }
            if let (answer, written) = chunked {
                let (type, chunks) = answer(recorded)
                context.write(
                    wrapOutboundOut(
                        .head(
                            HTTPResponseHead(
                                version: .http1_1, status: .ok, headers: ["Content-Type": type, "Transfer-Encoding": "chunked"]))),
                    promise: nil)
                for chunk in chunks { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: chunk)))), promise: nil) }
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenSuccess { written?() }
                return
            }
            if let (status, type, text) = answered {
                let bytes = ByteBuffer(string: text)
                context.write(
                    wrapOutboundOut(
                        .head(
                            HTTPResponseHead(
                                version: .http1_1, status: HTTPResponseStatus(statusCode: status),
                                headers: ["Content-Type": type, "Content-Length": "\(bytes.readableBytes)"]))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            let idText: String = {
                guard let range = body.range(of: #""id":"#) else { return "null" }
                return String(body[range.upperBound...].prefix { $0 != "," && $0 != "}" })
            }()
            switch behaviour {
            case .hang, .custom, .withStatus, .chunks, .chunksThen, .routed:
                return
            case .close:
                context.close(promise: nil)
            case .json:
                if !body.contains(#""id""#) {
                    context.writeAndFlush(
                        wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .accepted, headers: ["Content-Length": "0"]))),
                        promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                    return
                }
                let json = ByteBuffer(string: #"{"jsonrpc":"2.0","id":\#(idText),"result":{"ok":true}}"#)
                context.write(
                    wrapOutboundOut(
                        .head(
                            HTTPResponseHead(
                                version: .http1_1, status: .ok,
                                headers: [
                                    "Content-Type": "application/json", "Content-Length": "\(json.readableBytes)",
                                    "Mcp-Session-Id": "upstream-session-1",
                                ]))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(json))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .gatedEvents(let first, let afterRelease):
                streamGated(context, first: first, afterRelease: afterRelease)
            case .gatedStream:
                streamGated(
                    context,
                    first:
                        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n",
                    afterRelease: "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\(idText),\"result\":{\"done\":true}}\n\n")
            }
        }

        /// An SSE answer: `first` at once, `afterRelease` and the end once the gate opens.
        private func streamGated(_ context: ChannelHandlerContext, first: String, afterRelease: String) {
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: .http1_1, status: .ok,
                            headers: ["Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"]))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: first)))), promise: nil)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            gate.hop(to: context.eventLoop).whenSuccess {
                let (handler, context) = bound.value
                context.write(handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: afterRelease)))), promise: nil)
                context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

import NIOCore
import NIOHTTP1
import TLS

/// The handler at the top of every connection: answers `GET /healthz`, collects requests to the MCP endpoint
/// (bounded), and runs each as an `MCPExchange` task. Keeps the connection's TLS handshake for authentication.
final class MCPProxyHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let services: GatewayServices?
    private var handshake: TLSHandshakeCompleted?
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var bodyTooLarge = false
    private var exchangesInFlight = 0
    private var draining = false

    init(services: GatewayServices?) {
        self.services = services
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSHandshakeCompleted {
            handshake = event
        } else if event is GatewayDraining {
            draining = true
            if exchangesInFlight == 0 { context.close(promise: nil) }
            return
        } else if event is IdleStateHandler.IdleStateEvent {
            // Idle means no bytes either way; a quiet stream being relayed is not idle.
            if exchangesInFlight == 0 { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            bodyTooLarge = false
        case .body(let chunk):
            let limit = services?.limits.maximumBodyBytes ?? 64 * 1024
            if body.count + chunk.readableBytes > limit {
                bodyTooLarge = true
                body = []
            } else if !bodyTooLarge {
                body += chunk.readableBytesView
            }
        case .end:
            guard let head else { return }
            self.head = nil
            dispatch(context: context, head: head)
        }
    }

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if path == "/healthz" {
            if head.method == .GET || head.method == .HEAD {
                respond(context: context, to: head, status: .ok, json: #"{"status":"ok"}"#)
            } else {
                respond(context: context, to: head, status: .methodNotAllowed, json: #"{"error":"method not allowed","allow":["GET","HEAD"]}"#,
                        extraHeaders: [("Allow", "GET, HEAD")])
            }
            return
        }
        guard let services, path == services.mcpPath else {
            respond(context: context, to: head, status: .notFound, json: #"{"error":"not found"}"#)
            return
        }
        if bodyTooLarge {
            var record = AuditRecord(requestID: "-", httpMethod: head.method.rawValue, decision: .malformed,
                                     reason: "request body larger than \(services.limits.maximumBodyBytes) bytes")
            record.clientAddress = context.remoteAddress?.hostAndPort
            record.rule = "body_too_large"
            try? services.audit.append(record)
            var closing = head
            closing.headers.replaceOrAdd(name: "connection", value: "close")
            respond(context: context, to: closing, status: .payloadTooLarge,
                    json: #"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"request body too large"}}"#)
            return
        }
        let exchange = MCPExchange(
            services: services, channel: context.channel, head: head, body: body, handshake: handshake,
            clientAddress: context.remoteAddress?.hostAndPort)
        body = []
        exchangesInFlight += 1
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        Task {
            await exchange.run()
            eventLoop.execute {
                let (handler, context) = bound.value
                handler.exchangesInFlight -= 1
                if handler.draining && handler.exchangesInFlight == 0 { context.close(promise: nil) }
            }
        }
    }

    private func respond(
        context: ChannelHandlerContext, to request: HTTPRequestHead, status: HTTPResponseStatus, json: String,
        extraHeaders: [(String, String)] = []
    ) {
        let body = ByteBuffer(string: json + "\n")
        var headers = HTTPHeaders([
            ("Content-Type", "application/json"), ("Content-Length", "\(body.readableBytes)"), ("Cache-Control", "no-store"),
        ])
        headers.add(contentsOf: extraHeaders)
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

@available(*, unavailable)
extension MCPProxyHandler: Sendable {}

/// Sent to every connection on shutdown: close when no request is in flight.
struct GatewayDraining: Sendable {}

import NIOCore
import NIOHTTP1
import TLS

/// Answers the gateway's own endpoints (`GET /healthz`) and refuses everything else with a JSON error.
///
/// Sits on top of the HTTP/1.1 codec. It also keeps the connection's TLS handshake result, which later layers use
/// to authenticate callers.
final class HealthHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var request: HTTPRequestHead?
    /// The connection's TLS handshake, once it completed (nil on plain HTTP).
    private(set) var handshake: TLSHandshakeCompleted?

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSHandshakeCompleted { handshake = event }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // No endpoint here takes a body; it is read and dropped.
        case .end:
            guard let head = request else { return }
            request = nil
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch (path, head.method) {
        case ("/healthz", .GET), ("/healthz", .HEAD):
            send(context: context, to: head, status: .ok, json: #"{"status":"ok"}"#)
        case ("/healthz", _):
            send(
                context: context, to: head, status: .methodNotAllowed,
                json: #"{"error":"method not allowed","allow":["GET","HEAD"]}"#, extraHeaders: [("Allow", "GET, HEAD")])
        default:
            send(context: context, to: head, status: .notFound, json: #"{"error":"not found"}"#)
        }
    }

    private func send(
        context: ChannelHandlerContext, to request: HTTPRequestHead, status: HTTPResponseStatus, json: String,
        extraHeaders: [(String, String)] = []
    ) {
        let body = ByteBuffer(string: json + "\n")
        var headers = HTTPHeaders([
            ("Content-Type", "application/json"), ("Content-Length", "\(body.readableBytes)"),
            ("Cache-Control", "no-store"),
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
extension HealthHandler: Sendable {}

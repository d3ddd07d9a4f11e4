import NIOCore
import NIOHTTP1
import StrictJSON

/// Answers MCP messages for the demo server: `initialize` (with a session id), notifications (202), `ping`,
/// `tools/list`, `tools/call`, and `DELETE` (end of session). JSON responses only.
final class DemoHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let store: DemoStore
    private let log: SharedLog
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(store: DemoStore, log: SharedLog) {
        self.store = store
        self.log = log
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
            log.append(text)
            switch head.method {
            case .POST: respond(context, head, to: text)
            case .DELETE: send(context, head, status: .ok, json: nil)
            case .GET: send(context, head, status: .methodNotAllowed, json: nil)
            default: send(context, head, status: .methodNotAllowed, json: nil)
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, to text: String) {
        guard let message = (try? JSONParser.parse(text))?.objectValue else {
            return send(
                context, head, status: .badRequest, json: #"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#)
        }
        guard let id = message["id"], let method = message["method"]?.stringValue else {
            return send(context, head, status: .accepted, json: nil)  // notification or response
        }
        let params = message["params"]?.objectValue ?? JSONObject([])
        var session: String?
        let result: JSONValue
        switch method {
        case "initialize":
            session = String(UInt64.random(in: 1...UInt64.max), radix: 16)
            result = .object(
                JSONObject([
                    .init(key: "protocolVersion", value: params["protocolVersion"] ?? .string("2025-06-18")),
                    .init(key: "capabilities", value: .object(JSONObject([.init(key: "tools", value: .object(JSONObject([])))]))),
                    .init(
                        key: "serverInfo",
                        value: .object(
                            JSONObject([.init(key: "name", value: .string("mcpgw-demo")), .init(key: "version", value: .string("1.0"))]))),
                ]))
        case "ping":
            result = .object(JSONObject([]))
        case "tools/list":
            result = .object(JSONObject([.init(key: "tools", value: .array(DemoStore.tools))]))
        case "tools/call":
            let outcome = store.call(params["name"]?.stringValue ?? "", params["arguments"]?.objectValue ?? JSONObject([]))
            result = .object(
                JSONObject([
                    .init(
                        key: "content",
                        value: .array([
                            .object(
                                JSONObject([.init(key: "type", value: .string("text")), .init(key: "text", value: .string(outcome.text))]))
                        ])),
                    .init(key: "isError", value: .bool(outcome.isError)),
                ]))
        default:
            let error = JSONValue.object(
                JSONObject([
                    .init(key: "jsonrpc", value: .string("2.0")), .init(key: "id", value: id),
                    .init(
                        key: "error",
                        value: .object(
                            JSONObject([
                                .init(key: "code", value: .number(JSONNumber(-32601))),
                                .init(key: "message", value: .string("method not found: \(method)")),
                            ]))),
                ]))
            return send(context, head, status: .ok, json: error.serialized)
        }
        let response = JSONValue.object(
            JSONObject([.init(key: "jsonrpc", value: .string("2.0")), .init(key: "id", value: id), .init(key: "result", value: result)]))
        send(context, head, status: .ok, json: response.serialized, session: session)
    }

    private func send(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, status: HTTPResponseStatus, json: String?, session: String? = nil
    ) {
        let body = json.map { ByteBuffer(string: $0) }
        var headers = HTTPHeaders([("Content-Length", "\(body?.readableBytes ?? 0)")])
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        if let session { headers.add(name: "Mcp-Session-Id", value: session) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if let body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

@available(*, unavailable)
extension DemoHTTPHandler: Sendable {}

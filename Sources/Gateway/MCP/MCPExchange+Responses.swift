import NIOCore
import NIOHTTP1
import StrictJSON

extension MCPExchange {
    /// Writes a complete response; closes the connection afterwards when the request asked for it.
    func send(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer?) async {
        var headers = headers
        if !head.isKeepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        do {
            // A write's future completes only once flushed: queue head and body, then await the flushed end.
            channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: status, headers: headers)), promise: nil)
            if let body { channel.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil) }
            try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
            if !head.isKeepAlive { try? await channel.close() }
        } catch {
            try? await channel.close()
        }
    }

    /// A JSON body with `Content-Type: application/json`.
    func sendJSON(status: HTTPResponseStatus, json: String, extraHeaders: [(String, String)] = []) async {
        let body = ByteBuffer(string: json)
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(body.readableBytes)), ("Cache-Control", "no-store")])
        headers.add(contentsOf: extraHeaders)
        await send(status: status, headers: headers, body: body)
    }

    /// A JSON-RPC error response (id null when the request's id could not be read).
    func sendJSONRPCError(
        status: HTTPResponseStatus, id: JSONValue?, code: Int, message: String, data: JSONValue?, extraHeaders: [(String, String)] = []
    ) async {
        var error: [JSONObject.Member] = [.init(key: "code", value: .number(JSONNumber(Int64(code)))), .init(key: "message", value: .string(message))]
        if let data { error.append(.init(key: "data", value: data)) }
        let json = JSONValue.object(JSONObject([
            .init(key: "jsonrpc", value: .string("2.0")), .init(key: "id", value: id ?? .null), .init(key: "error", value: .object(JSONObject(error))),
        ])).serialized
        await sendJSON(status: status, json: json, extraHeaders: extraHeaders)
    }
}

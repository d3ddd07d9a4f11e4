import NIOCore
import NIOHTTP1
import StrictJSON

/// A request the gateway answers itself instead of forwarding: the response to send and the audit records that
/// go with it. Every refusal is built as a value and answered in one place (`MCPConnectionHandler.answer`), so a
/// refusal can never be sent without its records, nor recorded without being sent.
struct Refusal: Error {
    /// The HTTP status.
    var status: HTTPResponseStatus
    /// The JSON body.
    var body: [UInt8]
    /// Headers besides Content-Type, Content-Length and Cache-Control.
    var headers: [(String, String)]
    /// The records to write before answering (none when they were written already, e.g. into a reservation).
    var records: [AuditRecord]
    /// Close the connection after answering (set when the request's body will not be read).
    var closeConnection = false
    /// The body's media type.
    var contentType = "application/json"
    /// The JSON-RPC error code of the body, when it is a JSON-RPC error the gateway wrote.
    var code: Int?
    /// The refused body held only notifications (or responses): JSON-RPC allows no answer to it, and the body says
    /// in plain JSON what was refused. On the legacy transport such a POST gets `202` and no body.
    var answersNoMessage = false
    /// The tenant whose fetched signing keys might verify the refused token after a refetch (its `kid` was unknown).
    var unknownKeyTenant: String?

    /// A refusal with a plain JSON body.
    init(status: HTTPResponseStatus, json: String, headers: [(String, String)] = [], records: [AuditRecord]) {
        self.status = status
        self.body = Array(json.utf8)
        self.headers = headers
        self.records = records
    }

    /// A refusal whose body is a JSON-RPC error object (`id` null when the request's id could not be read).
    init(
        status: HTTPResponseStatus, id: JSONValue?, code: Int, message: String, data: JSONValue? = nil,
        headers: [(String, String)] = [], records: [AuditRecord]
    ) {
        self.status = status
        self.body = Self.errorBody(id: id, code: code, message: message, data: data)
        self.headers = headers
        self.records = records
        self.code = code
    }

    /// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…,"data":…}}` as bytes.
    static func errorBody(id: JSONValue?, code: Int, message: String, data: JSONValue?) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(96 + message.utf8.count)
        bytes += #"{"jsonrpc":"2.0","id":"#.utf8
        JSONText.append(id ?? .null, to: &bytes)
        bytes += #","error":{"code":"#.utf8
        JSONText.appendInteger(code, to: &bytes)
        bytes += #","message":"#.utf8
        JSONText.appendQuoted(message, to: &bytes)
        if let data {
            bytes += #","data":"#.utf8
            JSONText.append(data, to: &bytes)
        }
        bytes += "}}".utf8
        return bytes
    }

    /// The response head for a request of `version`.
    func responseHead(version: HTTPVersion, keepAlive: Bool) -> HTTPResponseHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(4 + self.headers.count)
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in self.headers { headers.add(name: name, value: value) }
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if version.major == 1 && version.minor == 0 {
            // RFC 9112 §9.3: an HTTP/1.0 client that asked to keep the connection takes an answer without
            // `keep-alive` to mean it closes (found by review: relayed answers said so, the gateway's own did not).
            headers.add(name: "Connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: version, status: status, headers: headers)
    }
}

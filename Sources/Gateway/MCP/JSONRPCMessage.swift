public import StrictJSON

/// One JSON-RPC 2.0 message as the gateway sees it, checked for shape but otherwise untouched.
public struct JSONRPCMessage: Sendable {
    /// What the message is.
    public enum Kind: Sendable, Hashable {
        /// A request (has `method` and `id`): it gets exactly one response.
        case request
        /// A notification (has `method`, no `id`): it never gets a JSON-RPC response.
        case notification
        /// A response to a server request (has `id` and `result` or `error`).
        case response
    }

    /// What the message is.
    public let kind: Kind
    /// `method`, for requests and notifications.
    public let method: String?
    /// `id`, for requests and responses (a string or a number).
    public let id: JSONValue?
    /// `params`, if present.
    public let params: JSONValue?
    /// Where `params` lies in the body it was parsed from (offsets into those bytes), when known.
    public internal(set) var paramsBytes: Range<Int>?
    /// Where `params.arguments` lies in the body it was parsed from, when present and known.
    public internal(set) var argumentsBytes: Range<Int>?

    /// Whether `key` is a member a JSON-RPC 2.0 message may have. Anything else — including case variants such as
    /// `METHOD` — is refused, so that no server behind the gateway can read the message differently from the policy.
    /// (Compared as strings: short ones compare as integers, where a set would hash each key.)
    static func isAllowedKey(_ key: String) -> Bool {
        switch key {
        case "jsonrpc", "id", "method", "params", "result", "error": true
        default: false
        }
    }

    /// Checks one message object.
    static func check(_ value: JSONValue) throws(MCPRequestError) -> JSONRPCMessage {
        guard case .object(let object) = value else { throw .invalidRequest("a JSON-RPC message must be an object", id: nil) }
        let id = object["id"]
        if let unknown = object.members.indices.first(where: { !isAllowedKey(object.members[$0].key) }).map({ object.members[$0].key }) {
            throw .invalidRequest("unknown member \"\(unknown)\" in a JSON-RPC message", id: validID(id))
        }
        guard object["jsonrpc"] == .string("2.0") else { throw .invalidRequest("\"jsonrpc\" must be \"2.0\"", id: validID(id)) }
        if let id {
            guard validID(id) != nil else { throw .invalidRequest("\"id\" must be a string or a number", id: nil) }
        }
        let params = object["params"]
        if let params {
            switch params {
            case .object, .array: break
            default: throw .invalidRequest("\"params\" must be an object or an array", id: id)
            }
        }
        if let methodValue = object["method"] {
            guard case .string(let method) = methodValue, !method.isEmpty else {
                throw .invalidRequest("\"method\" must be a non-empty string", id: id)
            }
            guard object["result"] == nil, object["error"] == nil else {
                throw .invalidRequest("a request cannot carry \"result\" or \"error\"", id: id)
            }
            return JSONRPCMessage(kind: id == nil ? .notification : .request, method: method, id: id, params: params)
        }
        guard let id else { throw .invalidRequest("a message needs \"method\" or \"id\"", id: nil) }
        guard (object["result"] == nil) != (object["error"] == nil) else {
            throw .invalidRequest("a response carries exactly one of \"result\" and \"error\"", id: id)
        }
        guard params == nil else { throw .invalidRequest("a response cannot carry \"params\"", id: id) }
        return JSONRPCMessage(kind: .response, method: nil, id: id, params: nil)
    }

    private static func validID(_ id: JSONValue?) -> JSONValue? {
        switch id {
        case .string?, .number?: id
        default: nil
        }
    }
}

/// The parsed body of one POST: a single message or a batch, plus the exact bytes that were parsed.
public struct MCPBody: Sendable {
    /// The messages in order.
    public let messages: [JSONRPCMessage]
    /// Whether the body was a JSON array (a batch).
    public let isBatch: Bool

    /// Parses a request body strictly (RFC 8259, duplicate keys refused, bounded depth and size). Each message knows
    /// where its `params` and `params.arguments` lie in `bytes` (audit records digest those bytes).
    public static func parse(_ bytes: some Collection<UInt8>, limits: JSONLimits) throws(MCPRequestError) -> MCPBody {
        let value: JSONValue
        let spans: [JSONSpan]
        do {
            (value, spans) = try JSONParser.parse(bytes, limits: limits, spansAlong: ["params", "arguments"])
        } catch {
            throw .parseError("\(error)")
        }
        var messages: [JSONRPCMessage] = []
        let isBatch: Bool
        if case .array(let elements) = value {
            guard !elements.isEmpty else { throw .invalidRequest("an empty batch", id: nil) }
            messages.reserveCapacity(elements.count)
            for element in elements { messages.append(try JSONRPCMessage.check(element)) }
            isBatch = true
        } else {
            messages.append(try JSONRPCMessage.check(value))
            isBatch = false
        }
        for span in spans where span.element < messages.count {
            if span.depth == 1 {
                messages[span.element].paramsBytes = span.range
            } else {
                messages[span.element].argumentsBytes = span.range
            }
        }
        return MCPBody(messages: messages, isBatch: isBatch)
    }
}

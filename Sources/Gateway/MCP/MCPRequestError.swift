public import StrictJSON

/// A message the gateway refuses to read, with the JSON-RPC error it answers with.
public enum MCPRequestError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Not JSON (-32700).
    case parseError(String)
    /// JSON, but not a valid JSON-RPC message (-32600).
    case invalidRequest(String, id: JSONValue?)
    /// A valid message whose params do not fit its method (-32602).
    case invalidParams(String, id: JSONValue?)
    /// A method that does not exist in the request's protocol version (-32601).
    case methodNotFound(String, id: JSONValue?)
    /// A routing header that is missing or contradicts the body (-32020, MCP 2026-07-28).
    case headerMismatch(String, id: JSONValue?)

    /// The JSON-RPC error code.
    public var code: Int {
        switch self {
        case .parseError: -32700
        case .invalidRequest: -32600
        case .invalidParams: -32602
        case .methodNotFound: -32601
        case .headerMismatch: -32020
        }
    }

    /// The request id the error answers, when it could be read.
    public var id: JSONValue? {
        switch self {
        case .parseError: nil
        case .invalidRequest(_, let id), .invalidParams(_, let id), .methodNotFound(_, let id), .headerMismatch(_, let id): id
        }
    }

    public var description: String {
        switch self {
        case .parseError(let why): "parse error: \(why)"
        case .invalidRequest(let why, _): "invalid request: \(why)"
        case .invalidParams(let why, _): "invalid params: \(why)"
        case .methodNotFound(let why, _): "method not found: \(why)"
        case .headerMismatch(let why, _): "header mismatch: \(why)"
        }
    }
}

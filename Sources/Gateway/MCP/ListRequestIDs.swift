import NIOCore
import StrictJSON

/// List requests travel upstream under ids of the gateway's own: the client's id sealed to the caller
/// (`SessionHandles.seal(listRequestID:for:)`), never shown to the client (its answer gets the client's id back). An
/// upstream routes answers by id within a session, so a second POST reusing a list request's id (a `tools/call` sent a
/// moment later, say) would otherwise receive the list's answer on its own stream, which carries no list request and is
/// relayed unfiltered. With an id nobody else knows, the list's answer can only come back on its own POST, or on the
/// session's GET stream, and both are filtered; being sealed, the id can be given back on either.
enum ListRequestIDs {
    /// `body` with each list request of `lists` (by canonical id) under the id `seal` makes of the client's: the
    /// rewritten body, and the list requests by their new canonical ids. Nil when the body does not parse (it was
    /// parsed once already, so it does). The body grows by about a hundred bytes per list request.
    static func rewrite(
        _ body: ByteBuffer, lists: [String: ListFilter.Kind], maximumDepth: Int, seal: (JSONValue) -> String
    ) -> (body: ByteBuffer, lists: [String: ListFilter.Kind])? {
        let limits = JSONLimits(maximumDepth: maximumDepth, maximumBytes: body.readableBytes)
        guard let value = try? body.withUnsafeReadableBytes({ try JSONParser.parse($0, limits: limits) }) else { return nil }
        var renamed: [String: ListFilter.Kind] = [:]
        func rewrite(_ message: JSONValue) -> JSONValue {
            guard let object = message.objectValue, object["method"] != nil, let id = object["id"],
                let key = ExchangeDecisions.canonicalID(id), let kind = lists[key]
            else { return message }
            let upstreamID = JSONValue.string(seal(id))
            renamed[upstreamID.serialized] = kind
            return .object(object.updating("id") { _ in upstreamID })
        }
        let rewritten: JSONValue
        if case .array(let messages) = value {
            rewritten = .array(messages.map(rewrite))
        } else {
            rewritten = rewrite(value)
        }
        return (ByteBuffer(bytes: rewritten.serializedBytes), renamed)
    }
}

import NIOCore
import StrictJSON

/// List requests travel upstream under ids of the gateway's own: a random string per request, never shown to the
/// client (its answer gets the client's id back). An upstream routes answers by id within a session, so a second POST
/// reusing a list request's id (a `tools/call` sent a moment later, say) would otherwise receive the list's answer on
/// its own stream, which carries no list request and is relayed unfiltered. With an id nobody else knows, the list's
/// answer can only come back on its own POST, or on the session's GET stream, and both are filtered.
enum ListRequestIDs {
    /// The prefix of the gateway's own ids.
    static let prefix = "mcpgw-list-"

    /// 16 lowercase hex digits.
    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// `body` with each list request of `lists` (by canonical id) under a fresh id of the gateway's: the rewritten body,
    /// the list requests by their new canonical ids, and each new canonical id's original id. Nil when the body does
    /// not parse (it was parsed once already, so it does).
    static func rewrite(
        _ body: ByteBuffer, lists: [String: ListFilter.Kind], limits: JSONLimits
    ) -> (body: ByteBuffer, lists: [String: ListFilter.Kind], originals: [String: JSONValue])? {
        guard let value = try? body.withUnsafeReadableBytes({ try JSONParser.parse($0, limits: limits) }) else { return nil }
        var renamed: [String: ListFilter.Kind] = [:]
        var originals: [String: JSONValue] = [:]
        var generator = SystemRandomNumberGenerator()
        func rewrite(_ message: JSONValue) -> JSONValue {
            guard let object = message.objectValue, object["method"] != nil, let id = object["id"],
                let key = ExchangeDecisions.canonicalID(id), let kind = lists[key]
            else { return message }
            let fresh = JSONValue.string(prefix + hex(generator.next()) + hex(generator.next()))
            renamed[fresh.serialized] = kind
            originals[fresh.serialized] = id
            return .object(object.updating("id") { _ in fresh })
        }
        let rewritten: JSONValue
        if case .array(let messages) = value {
            rewritten = .array(messages.map(rewrite))
        } else {
            rewritten = rewrite(value)
        }
        return (ByteBuffer(bytes: rewritten.serializedBytes), renamed, originals)
    }
}

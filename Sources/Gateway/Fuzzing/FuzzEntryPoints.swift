import Identity
import NIOCore
import NIOHTTP1
public import Policy
import StrictJSON

/// The gateway's parsers of hostile bytes, reachable from the fuzz targets (`Sources/mcpgw-fuzz`) and their
/// regression tests without making the parsers themselves public. Each entry point runs one parser the way the
/// gateway runs it and checks what must hold whatever the input (`fatalError` on a violation, which the fuzzer
/// reports like a crash).
public enum FuzzEntryPoints {
    /// The POST body path: strict JSON-RPC reading, the method table, targets, the 2026-07-28 envelope, task-handle
    /// opening and id canonicalisation.
    public static func jsonRPCBody(_ bytes: UnsafeRawBufferPointer) {
        guard let body = try? MCPBody.parse(bytes, limits: JSONLimits(maximumDepth: 64, maximumBytes: 1 << 20)) else { return }
        for message in body.messages {
            if let method = message.method {
                _ = MCPMethod.treatment(of: method, protocolVersion: "2026-07-28")
                _ = MCPMethod.treatment(of: method, protocolVersion: nil)
            }
            _ = try? MCPMethod.target(of: message)
            if let id = message.id { _ = ExchangeDecisions.canonicalID(id) }
            _ = TaskHandleRewrite.answerMayCarryTasks(message)
        }
        _ = TaskHandleRewrite.requestMayCarryHandles(body.messages, body: bytes)
        guard let value = try? JSONParser.parse(bytes), let object = value.objectValue else { return }
        let opened = try? TaskHandleRewrite.opened(object) { $0.hasPrefix("mcpgw1k.") ? .success("task") : .failure(.unreadable) }
        if let opened, JSONValue.object(opened).serialized.contains("mcpgw1k.") && !object.keys.contains("result") {
            // Only a request's own fields are opened; handles elsewhere (arguments, say) may remain. Nothing to check
            // beyond not crashing, but the rewritten message must still be strict JSON.
            guard (try? JSONParser.parse(JSONValue.object(opened).serializedBytes)) != nil else { fatalError("opened message is not JSON") }
        }
    }

    /// An upstream's SSE stream through the per-event filter: list filtering by `policy` for acme/bot1, task
    /// handles sealed, event ids sealed. The bytes arrive in two chunks, split where the first byte says.
    public static func sseStream(_ bytes: UnsafeRawBufferPointer, policy: PolicySnapshot) {
        var filter = listFilter(policy)
        filter.sealTask = { "mcpgw1k.fuzz." + $0 }
        filter.tasks = TaskOwnership(all: bytes.first.map { $0 & 1 == 1 } ?? false, named: ["task-1"], taskRequests: ["1"])
        var events = SSEEventFilter(filter: filter, maximumEventBytes: 64 * 1024, sealEventID: { "sealed-" + $0 })
        let split = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
        var output: [UInt8] = []
        do {
            output += try events.feed(ByteBuffer(bytes: bytes[..<split]))
            output += try events.feed(ByteBuffer(bytes: bytes[split...]))
            output += try events.finish()
        } catch {
            return
        }
        // What goes out is whole events, each ended by its blank line: read as an SSE reader reads it, nothing is
        // left over.
        var start = 0
        let terminated = output + [0]
        while start < output.count {
            guard let end = SSEEventFilter.eventEnd(in: terminated, from: start), end > start else {
                fatalError("relayed a partial SSE event")
            }
            start = end
        }
    }

    /// HTTP/1.1 framing of hostile bytes, as a client's requests (`RequestFraming`) and as an upstream's responses
    /// (`UpstreamResponseFraming`, to a POST and, if the first byte says, a HEAD before it, then the close). Framing
    /// must not depend on how the bytes are split into reads: the input whole and cut where the first byte says
    /// frame to the same parts (bodies joined) and the same error, and no body holds more bytes than came in.
    public static func http1(_ bytes: UnsafeRawBufferPointer) {
        let input = Array(bytes)
        let cut = input.isEmpty ? 0 : Int(input[0]) % (input.count + 1)
        func requests(_ pieces: [[UInt8]]) -> ([String], HTTPFramingError?) {
            var framing = RequestFraming(maximumHeadBytes: 1 << 20)
            var parts = FramedParts()
            for piece in pieces {
                if let error = framing.feed(ByteBuffer(bytes: piece), { parts.take($0) }) { return (parts.parts, error) }
            }
            return (parts.parts, nil)
        }
        func responses(_ pieces: [[UInt8]]) -> ([String], HTTPFramingError?) {
            var framing = UpstreamResponseFraming(maximumHeadBytes: 1 << 20)
            if input.first.map({ $0 & 1 == 1 }) ?? false { framing.requestSent(method: .HEAD) }
            framing.requestSent(method: .POST)
            var parts = FramedParts()
            for piece in pieces {
                if let error = framing.feed(ByteBuffer(bytes: piece), { parts.take($0) }) { return (parts.parts, error) }
            }
            return (parts.parts, framing.closed { parts.take($0) })
        }
        let pieces = [Array(input[..<cut]), Array(input[cut...])]
        let (wholeRequests, requestError) = requests([input])
        let (cutRequests, cutRequestError) = requests(pieces)
        // An error stops framing where it is found, so parts before it may differ by where the read ended.
        if requestError == nil || cutRequestError == nil {
            guard wholeRequests == cutRequests, requestError == cutRequestError else { fatalError("request framing depends on the reads") }
        }
        let (wholeResponses, responseError) = responses([input])
        let (cutResponses, cutResponseError) = responses(pieces)
        if responseError == nil || cutResponseError == nil {
            guard wholeResponses == cutResponses, responseError == cutResponseError else {
                fatalError("response framing depends on the reads")
            }
        }
        for parts in [wholeRequests, wholeResponses]
        where parts.reduce(0, { $0 + ($1.hasPrefix("body ") ? $1.count - 5 : 0) }) > input.count {
            fatalError("more body bytes than input")
        }
    }

    /// Framed parts as text, consecutive body parts joined (how reads split a body does not matter).
    private struct FramedParts {
        var parts: [String] = []

        mutating func take(_ part: HTTPServerRequestPart) {
            switch part {
            case .head(let head): parts.append("head \(head.method.rawValue) \(head.uri) \(head.version) \(head.headers)")
            case .body(let bytes): body(bytes)
            case .end: parts.append("end")
            }
        }

        mutating func take(_ part: HTTPClientResponsePart) {
            switch part {
            case .head(let head): parts.append("head \(head.status.code) \(head.version) \(head.headers)")
            case .body(let bytes): body(bytes)
            case .end: parts.append("end")
            }
        }

        private mutating func body(_ bytes: ByteBuffer) {
            let text = String(decoding: bytes.readableBytesView.map { $0 == 0 ? 1 : $0 }, as: Unicode.ASCII.self)
            if let last = parts.last, last.hasPrefix("body ") { parts[parts.count - 1] = last + text } else { parts.append("body " + text) }
        }
    }

    /// A complete JSON answer through list filtering and task-handle sealing.
    public static func listAnswer(_ bytes: [UInt8], policy: PolicySnapshot) {
        var filter = listFilter(policy)
        filter.sealTask = { "mcpgw1k.fuzz." + $0 }
        filter.tasks = TaskOwnership(all: false, named: ["task-1"], taskRequests: ["1"])
        guard let filtered = try? filter.filterJSON(bytes, maximumBytes: 1 << 20) else { return }
        // A filtered answer is strict JSON again, and filtering it once more changes nothing further.
        guard let again = try? JSONParser.parse(filtered) else { fatalError("filtered answer is not JSON") }
        _ = again
    }

    private static func listFilter(_ policy: PolicySnapshot) -> ListFilter {
        ListFilter(
            snapshot: policy,
            principal: Principal(tenant: "acme", agent: "bot1", method: .jwt, scopes: [], expiresAt: nil, certificate: nil, token: nil),
            requests: nil)
    }
}

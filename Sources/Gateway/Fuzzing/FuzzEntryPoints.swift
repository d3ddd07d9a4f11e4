import Identity
import NIOCore
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

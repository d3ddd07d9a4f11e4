import NIOHTTP1
import StrictJSON
import Synchronization
import TLS

/// W3C trace context (`traceparent`, `tracestate`) for one request: the client's, continued, or one the gateway
/// starts. The gateway is a hop of its own: the upstream is told the gateway's span as its parent, with the
/// client's trace id and flags, in the `traceparent` header and — for 2026-07-28, where MCP carries trace context in
/// `params._meta` — there too. Every audit record of the request carries the trace id.
struct TraceContext: Sendable, Equatable {
    /// 32 lower-case hex digits, not all zero.
    let traceID: String
    /// The client's span (16 hex digits), when the client sent a trace context.
    let parentSpanID: String?
    /// The gateway's span for this request (16 hex digits).
    let spanID: String
    /// Trace flags (2 hex digits; `01` sampled).
    let flags: String
    /// The client's `tracestate`, passed on as it came (bounded, at most 512 bytes).
    let state: String?

    /// The `traceparent` the upstream gets: this trace, the gateway's span as parent.
    var upstreamTraceparent: String { "00-\(traceID)-\(spanID)-\(flags)" }

    /// The trace context of a request: its `traceparent` header, else `params._meta.traceparent` of its message,
    /// else a new trace. A malformed value is ignored (a new trace starts), as W3C specifies.
    static func of(_ headers: RequestHeaderValues, meta: JSONObject?) -> TraceContext {
        let spanID = randomHex(bytes: 8)
        let header = headers.first(.traceparent)
        let parsed = (header.flatMap(parse) ?? meta?["traceparent"]?.stringValue.flatMap(parse))
        let state = (header != nil ? headers.first(.tracestate) : meta?["tracestate"]?.stringValue).flatMap {
            $0.utf8.count <= 512 && $0.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F } ? $0 : nil
        }
        guard let parsed else {
            return TraceContext(traceID: randomHex(bytes: 16), parentSpanID: nil, spanID: spanID, flags: "01", state: nil)
        }
        return TraceContext(traceID: parsed.traceID, parentSpanID: parsed.spanID, spanID: spanID, flags: parsed.flags, state: state)
    }

    /// `00-<trace id>-<span id>-<flags>` read strictly (version 00, lower-case hex, ids not all zero); a higher
    /// version is read by its first four fields, as W3C asks.
    static func parse(_ text: String) -> (traceID: String, spanID: String, flags: String)? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].count == 2, parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
            parts.prefix(4).allSatisfy({ $0.utf8.allSatisfy(isLowerHex) }), parts[0] != "ff", parts[0] == "00" ? parts.count == 4 : true,
            parts[1].contains(where: { $0 != "0" }), parts[2].contains(where: { $0 != "0" })
        else { return nil }
        return (String(parts[1]), String(parts[2]), String(parts[3]))
    }

    private static func isLowerHex(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }

    /// `count` random bytes as lower-case hex, never all zero. Ids only need to be unique and unpredictable enough
    /// to tell traces apart (W3C), not secret: they come from SplitMix64 over a counter seeded once from the system's
    /// generator, which costs no system call per request.
    private static func randomHex(bytes count: Int) -> String {
        String(unsafeUninitializedCapacity: count * 2) { buffer in
            var written = 0
            while written < count * 2 {
                var word = IDSource.next()
                for _ in 0..<8 where written < count * 2 {
                    buffer[written] = HexText.digit(UInt8(truncatingIfNeeded: word >> 4) & 0xF)
                    buffer[written + 1] = HexText.digit(UInt8(truncatingIfNeeded: word) & 0xF)
                    word >>= 8
                    written += 2
                }
            }
            return written
        }
    }
}

/// A process-wide source of well-mixed 64-bit values for trace and span ids (SplitMix64 over an atomic counter).
enum IDSource {
    private static let counter = Atomic<UInt64>(UInt64.random(in: 1...UInt64.max))

    /// The next value (never zero).
    static func next() -> UInt64 {
        var value = counter.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        value ^= value >> 31
        return value == 0 ? 1 : value
    }
}

import NIOHTTP1

/// The request headers the gateway reads, found in one pass over the head.
///
/// Each `HTTPHeaders.first(name:)` walks the headers from the start and copies every name and value it passes
/// (a reference-count operation for each value longer than 15 bytes, such as a bearer token); a request was walked
/// about twenty times. Here each header is visited once and the first value of every name the gateway reads is kept,
/// as `first(name:)` would give it, along with what the head checks need: which single-valued headers repeat, and
/// the first read or forwarded value that is not UTF-8. A class: handed from step to step as one reference, not as
/// a copy of every value.
final class RequestHeaderValues: Sendable {
    /// A header the gateway reads. The first `singleValuedCount` are the single-valued ones, in the order their
    /// repetition is reported.
    enum Name: Int, CaseIterable {
        case contentType, mcpSessionID, mcpProtocolVersion, mcpMethod, mcpName, lastEventID, accept, host
        case authorization, traceparent, tracestate, contentLength, transferEncoding, upgrade, expect, connection
    }

    /// The lower-case names, in `Name` order.
    static let names = HeaderNames([
        "content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id", "accept", "host",
        "authorization", "traceparent", "tracestate", "content-length", "transfer-encoding", "upgrade", "expect",
        "connection",
    ])

    /// Headers that must appear at most once: the gateway reads them and the upstream reads them, and two copies could
    /// be read differently by each. The first names of `names`.
    static let singleValuedCount = 8

    /// The first value of each name (nil when absent), in `Name` order.
    private let firstValues: InlineArray<16, String?>
    /// One bit per name seen, and one per name seen again.
    private let seen: UInt32
    private let repeated: UInt32
    /// What the `Connection` headers (all of them) say about reusing the connection.
    let connection: ConnectionReuse
    /// Whether any `Mcp-Param-*` header is present.
    let hasParameterHeaders: Bool
    /// The name, as sent, of the first single-valued or `Mcp-Param-*` header whose value holds U+FFFD: the HTTP
    /// decoder's stand-in for bytes that are not UTF-8 (`HeaderText.holdsReplacementCharacter`).
    let notUTF8: String?

    /// The values of `headers`, read in one pass.
    init(_ headers: HTTPHeaders) {
        var firstValues = InlineArray<16, String?>(repeating: nil)
        var seen: UInt32 = 0
        var repeated: UInt32 = 0
        var hasParameterHeaders = false
        var notUTF8: String?
        var connection = ConnectionReuse.unstated
        for (name, value) in headers {
            guard let index = Self.names.index(of: name) else {
                if MCPHeaderValue.isParamHeader(name) {
                    hasParameterHeaders = true
                    if notUTF8 == nil, HeaderText.holdsReplacementCharacter(value) { notUTF8 = name }
                }
                continue
            }
            if index < Self.singleValuedCount, notUTF8 == nil, HeaderText.holdsReplacementCharacter(value) { notUTF8 = name }
            if index == Name.connection.rawValue {
                var value = value
                value.withUTF8 { connection.read(UnsafeRawBufferPointer($0)) }
            }
            let bit: UInt32 = 1 << index
            repeated |= seen & bit
            guard seen & bit == 0 else { continue }
            seen |= bit
            firstValues[index] = value
        }
        // Moved, not copied: a copy retains every value (16 optional strings) and the local then releases them all.
        self.firstValues = consume firstValues
        self.seen = seen
        self.repeated = repeated
        self.hasParameterHeaders = hasParameterHeaders
        self.notUTF8 = notUTF8
        self.connection = connection
    }

    /// The first value of header `name`, as `HTTPHeaders.first(name:)` gives it.
    func first(_ name: Name) -> String? { firstValues[name.rawValue] }

    /// Whether header `name` is present.
    func contains(_ name: Name) -> Bool { seen & (1 << name.rawValue) != 0 }

    /// Whether header `name` appears more than once.
    func isRepeated(_ name: Name) -> Bool { repeated & (1 << name.rawValue) != 0 }

    /// The lower-case name of the first single-valued header (in `Name` order) that appears more than once.
    var repeatedSingleValued: String? {
        let single = repeated & ((1 << Self.singleValuedCount) - 1)
        return single == 0 ? nil : Self.names.names[single.trailingZeroBitCount]
    }
}

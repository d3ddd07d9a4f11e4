public import Identity
public import StrictJSON

import struct Foundation.Date

#if canImport(Glibc)
import Glibc
#endif

/// One decision, as one JSON line of the audit log.
public struct AuditRecord: Sendable {
    /// What happened.
    public enum Decision: String, Sendable {
        /// Forwarded.
        case allow
        /// Forwarded and marked for audit.
        case audit
        /// Refused by policy.
        case deny
        /// Refused by a rate limit.
        case rateLimited = "rate_limited"
        /// Refused: the caller was not authenticated.
        case authenticationFailed = "authentication_failed"
        /// Refused: the request could not be read.
        case malformed
        /// Refused: the gateway could not serve it (audit log, budgets, upstream, shutdown).
        case unavailable
    }

    /// When the decision was made, in milliseconds since 1970 (UTC).
    public var unixMilliseconds: Int64 = AuditRecord.nowMilliseconds()
    /// The gateway's id for the HTTP request (shared by the messages of a batch).
    public var requestID: String
    /// The caller's tenant, when known.
    public var tenant: String?
    /// The caller's agent, when known.
    public var agent: String?
    /// `mtls`, `jwt` or `both`, when authenticated.
    public var authMethod: String?
    /// The client's address.
    public var clientAddress: String?
    /// The HTTP method of the request.
    public var httpMethod: String
    /// The JSON-RPC method (or `stream` for a GET, `session_end` for a DELETE).
    public var method: String?
    /// The tool name, resource URI or prompt name.
    public var target: String?
    /// The JSON-RPC id (a string or a number).
    public var jsonrpcID: JSONValue?
    /// The decision.
    public var decision: Decision
    /// The deciding rule (`default`, a rule id, a rate limit id, or a code such as `token_expired`).
    public var rule: String?
    /// Why, in words.
    public var reason: String
    /// The upstream's HTTP status, when the call was forwarded (or 502/504 when the upstream failed).
    public var upstreamStatus: Int?
    /// Microseconds from receiving the request to the decision (refusals) or to the upstream's response head.
    public var latencyMicroseconds: Int?
    /// The MCP session id, if any.
    public var sessionID: String?
    /// The W3C trace id of the request (the client's, or one the gateway started).
    public var traceID: String?
    /// The arguments: keys and a digest by default, in full where a rule asks.
    public var arguments: LoggedArguments?
    /// Set when shared rate limits were out of reach for this decision: `local_fallback` (the replica's local share
    /// applied) or `fail_closed` (refused for it).
    public var sharedLimits: String?

    /// A record for one decision.
    public init(requestID: String, httpMethod: String, decision: Decision, reason: String) {
        self.requestID = requestID
        self.httpMethod = httpMethod
        self.decision = decision
        self.reason = reason
    }

    /// A record with every field a decision on a request sets, given at once (`ExchangeRequest.record`): a record
    /// built and then completed field by field there was copied once more before it was returned.
    init(
        requestID: String, httpMethod: String, decision: Decision, reason: String, tenant: String?, agent: String?,
        authMethod: String?, clientAddress: String?, method: String?, target: String? = nil, jsonrpcID: JSONValue? = nil,
        rule: String?, latencyMicroseconds: Int?, sessionID: String?, traceID: String?, arguments: LoggedArguments? = nil,
        sharedLimits: String? = nil
    ) {
        self.requestID = requestID
        self.tenant = tenant
        self.agent = agent
        self.authMethod = authMethod
        self.clientAddress = clientAddress
        self.httpMethod = httpMethod
        self.method = method
        self.target = target
        self.jsonrpcID = jsonrpcID
        self.decision = decision
        self.rule = rule
        self.reason = reason
        self.latencyMicroseconds = latencyMicroseconds
        self.sessionID = sessionID
        self.traceID = traceID
        self.arguments = arguments
        self.sharedLimits = sharedLimits
    }

    /// Milliseconds since 1970 from the system's real-time clock.
    public static func nowMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// What a record keeps of a call's arguments.
    public enum LoggedArguments: Sendable, Equatable {
        /// In full: the deciding rule asked for them (`log_arguments`).
        case full(JSONValue)
        /// `{"keys":[...],"sha256":"..."}`: the top-level keys of the arguments (none when they are not an object),
        /// and the SHA-256 of the bytes the client sent for them. No value is kept.
        case redacted(keys: [String], sha256: SHA256Digest)
    }

    /// The redacted form of `arguments`, with `digest`: the SHA-256 of what the client sent for them (the arguments'
    /// range of the request body). Without it (arguments the gateway did not parse from a body), the digest is taken
    /// over the compact serialization the audit log itself would write.
    public static func redacted(_ arguments: JSONValue?, digest: SHA256Digest? = nil) -> LoggedArguments? {
        guard let arguments else { return nil }
        if let digest { return .redacted(keys: arguments.objectValue?.keys ?? [], sha256: digest) }
        var serialized: [UInt8] = []
        JSONText.append(arguments, to: &serialized)
        return .redacted(keys: arguments.objectValue?.keys ?? [], sha256: SHA256Digest(of: serialized))
    }

    /// `2026-11-25T01:07:29.777Z`: UTC, millisecond precision, written by hand (it runs for every record).
    static func timestamp(_ date: Date) -> String {
        var bytes: [UInt8] = []
        let seconds = date.timeIntervalSince1970
        let whole = seconds.rounded(.down)
        appendTimestamp(Int64(whole) * 1000 + min(999, Int64(((seconds - whole) * 1000).rounded(.down))), to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func appendTimestamp(_ milliseconds: Int64, to bytes: inout some JSONByteSink) {
        var whole = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&whole, &parts)
        func pad(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = value
            while divisor > 0 {
                bytes.put(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
                rest %= divisor
                divisor /= 10
            }
        }
        pad(Int(parts.tm_year) + 1900, 4)
        bytes.put(UInt8(ascii: "-"))
        pad(Int(parts.tm_mon) + 1, 2)
        bytes.put(UInt8(ascii: "-"))
        pad(Int(parts.tm_mday), 2)
        bytes.put(UInt8(ascii: "T"))
        pad(Int(parts.tm_hour), 2)
        bytes.put(UInt8(ascii: ":"))
        pad(Int(parts.tm_min), 2)
        bytes.put(UInt8(ascii: ":"))
        pad(Int(parts.tm_sec), 2)
        bytes.put(UInt8(ascii: "."))
        pad(Int(milliseconds % 1000), 3)
        bytes.put(UInt8(ascii: "Z"))
    }

    /// The longest text a record keeps of a field the caller chooses (method, target, JSON-RPC id, an argument key, a
    /// session or trace id), in UTF-8 bytes; `reason`, which quotes some of them, keeps twice as much. A longer text is
    /// cut, and the cut says how long it was and its SHA-256: a record stays one line a log shipper reads (Fluent
    /// Bit's default line buffer is 32 KiB) however long a name the caller sends.
    public static let fieldBytes = 1024
    /// The most argument keys a redacted record lists (the rest are counted).
    public static let listedKeys = 64

    /// `text` cut to `limit` UTF-8 bytes (on a scalar boundary), with its length and SHA-256, when it is longer.
    static func capped(_ text: String, _ limit: Int = fieldBytes) -> String {
        guard text.utf8.count > limit else { return text }
        let bytes = Array(text.utf8)
        var end = limit
        while end > 0 && bytes[end] & 0xC0 == 0x80 { end -= 1 }  // not inside a scalar's bytes
        return String(decoding: bytes[..<end], as: UTF8.self) + "…[cut: \(bytes.count) bytes, sha256 \(SHA256Digest.hex(bytes))]"
    }

    /// `value` as the record keeps it: itself, or its JSON text cut when that is longer than `fieldBytes`.
    static func capped(_ value: JSONValue) -> JSONValue {
        if case .string(let text) = value { return .string(capped(text)) }
        if case .number(let number) = value, number.literal.utf8.count <= fieldBytes { return value }
        let text = value.serialized
        return text.utf8.count <= fieldBytes ? value : .string(capped(text))
    }

    /// The record as one line of JSON bytes, ending in a newline.
    public var lineBytes: [UInt8] { withLine { Array($0) } }

    /// Calls `body` with the record's line (JSON bytes ending in a newline), valid only during the call. The line is
    /// written into scratch on the stack (no check of an array's storage per byte, and no array at all for a caller
    /// that copies the line on, as the audit log's queue does); a line longer than the scratch (long reasons or ids,
    /// arguments in full) is written into an array instead.
    func withLine<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        // A record that may not fit (long texts, or arguments in full) goes straight to an array: not written twice.
        if !mayOverflowScratch {
            var fitted = true
            let result = try withUnsafeTemporaryAllocation(byteCount: Self.scratchBytes, alignment: 1) { scratch -> Result? in
                var writer = JSONLineWriter(into: FixedByteSink(scratch))
                write(into: &writer)
                guard !writer.sink.overflowed else {
                    fitted = false
                    return nil
                }
                return try body(writer.sink.written)
            }
            if fitted { return result! }
        }
        var writer = JSONLineWriter(into: [UInt8]())
        writer.reserveCapacity(2 * Self.scratchBytes)
        write(into: &writer)
        return try writer.sink.withUnsafeBytes(body)
    }

    /// Bytes of stack scratch a line is written into first: a typical record takes 300 to 600. (Up to 1 KiB, Swift
    /// always takes temporary memory from the stack; a larger request may be allocated on the heap.)
    static let scratchBytes = 1024

    /// Whether the line may not fit the scratch, told without writing it: texts that are long by themselves, or
    /// arguments in full. (A line that is not told here and does not fit is written again into an array.)
    private var mayOverflowScratch: Bool {
        if case .full? = arguments { return true }
        let longest = reason.utf8.count + (target?.utf8.count ?? 0) + (method?.utf8.count ?? 0) + (rule?.utf8.count ?? 0)
        return longest > Self.scratchBytes / 2
    }

    /// Writes the record's members and ends the line.
    func write(into writer: inout JSONLineWriter<some JSONByteSink>) {
        writer.timestamp("time", unixMilliseconds)
        writer.string("request_id", requestID)
        writer.optionalString("tenant", tenant)
        writer.optionalString("agent", agent)
        writer.optionalString("auth_method", authMethod)
        writer.optionalString("client_address", clientAddress)
        writer.string("http_method", httpMethod)
        writer.optionalString("method", method.map { Self.capped($0) })
        writer.optionalString("target", target.map { Self.capped($0) })
        if let jsonrpcID { writer.value("jsonrpc_id", Self.capped(jsonrpcID)) }
        writer.string("decision", decision.rawValue)
        writer.optionalString("rule", rule.map { Self.capped($0) })
        writer.string("reason", Self.capped(reason, 2 * Self.fieldBytes))
        if let upstreamStatus { writer.integer("upstream_status", upstreamStatus) }
        if let latencyMicroseconds { writer.milliseconds("latency_ms", microseconds: latencyMicroseconds) }
        writer.optionalString("session_id", sessionID.map { Self.capped($0) })
        writer.optionalString("trace_id", traceID.map { Self.capped($0) })
        writer.optionalString("shared_limits", sharedLimits)
        switch arguments {
        case .full(let value)?: writer.value("arguments", value)
        case .redacted(let keys, let digest)?:
            if keys.count <= Self.listedKeys && keys.allSatisfy({ $0.utf8.count <= Self.fieldBytes }) {
                writer.redactedArguments("arguments", keys: keys, digest)  // the common case: nothing to cut or copy
            } else {
                var listed = keys.prefix(Self.listedKeys).map { Self.capped($0) }
                if keys.count > Self.listedKeys { listed.append("…[\(keys.count - Self.listedKeys) more keys]") }
                writer.redactedArguments("arguments", keys: listed, digest)
            }
        case nil: break
        }
        writer.finishLine()
    }

    /// At most how many bytes `lineBytes` will take once the upstream's answer is added (status, latency, a note of
    /// at most `noteBytes`), reckoned without writing the line: every forwarded call reserves this much room in the
    /// audit log. Short texts count six bytes per byte (the worst escape, `\u00XX`), without reading them; long ones
    /// are read for what they escape to, so that a long URI or id does not reserve six times its size. A field the
    /// record cuts (`capped`) counts no more than its cut form can take, however long the caller made it: room is
    /// reserved for what the line can hold, so one tenant's long names cannot take the log's room from the others.
    /// Arguments count only as far as the record keeps them (their listed keys, or in full when the rule logs them).
    public var reservationBytes: Int {
        var text = Self.escapedBytes(requestID) + Self.escapedBytes(httpMethod) + Self.cappedBytes(reason, 2 * Self.fieldBytes)
        if let tenant { text += Self.escapedBytes(tenant) }
        if let agent { text += Self.escapedBytes(agent) }
        if let authMethod { text += Self.escapedBytes(authMethod) }
        if let clientAddress { text += Self.escapedBytes(clientAddress) }
        if let method { text += Self.cappedBytes(method) }
        if let target { text += Self.cappedBytes(target) }
        if let rule { text += Self.cappedBytes(rule) }
        if let sessionID { text += Self.cappedBytes(sessionID) }
        if let traceID { text += Self.cappedBytes(traceID) }
        if let sharedLimits { text += Self.escapedBytes(sharedLimits) }
        if let jsonrpcID { text += min(Self.textBytes(jsonrpcID), Self.cutBytes(Self.fieldBytes)) }
        switch arguments {
        case .full(let value)?: text += Self.textBytes(value)
        case .redacted(let keys, _)?:
            text += keys.prefix(Self.listedKeys).reduce(100) { $0 + Self.cappedBytes($1) + 3 } + (keys.count > Self.listedKeys ? 64 : 0)
        case nil: break
        }
        return 512 + 6 * Self.noteBytes + text
    }

    /// The most bytes `text` can take in a record that cuts it to `limit` bytes (`capped`), quotes included.
    private static func cappedBytes(_ text: String, _ limit: Int = fieldBytes) -> Int {
        text.utf8.count > limit ? cutBytes(limit) : escapedBytes(text)
    }

    /// The most bytes a text cut to `limit` bytes takes escaped: the kept bytes at six each, the cut's note (its
    /// length and SHA-256, in ASCII that needs no escape) and the quotes.
    private static func cutBytes(_ limit: Int) -> Int { 6 * limit + 128 }

    /// The most bytes of arguments (as the client sent them) a record keeps in full (`log_arguments`); larger ones
    /// are logged redacted.
    public static let maximumFullArgumentsBytes = 16 * 1024

    /// The longest note (`"; " + note`) a record's reason gets once its call ends.
    public static let noteBytes = 256

    /// The most bytes `text` can take once escaped into a record (quotes included).
    private static func escapedBytes(_ text: String) -> Int {
        let count = text.utf8.count
        guard count > 256 else { return 6 * count + 2 }
        var bytes = 2
        for byte in text.utf8 {
            switch byte {
            case 0x00..<0x20, 0x7F: bytes += 6
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes += 2
            case 0x80...: bytes += 3
            default: bytes += 1
            }
        }
        return bytes
    }

    /// The most bytes `value` can take written into a record.
    private static func textBytes(_ value: JSONValue) -> Int {
        switch value {
        case .string(let text): escapedBytes(text)
        case .number(let number): number.literal.utf8.count
        case .bool, .null: 5
        case .array(let elements): elements.reduce(2) { $0 + textBytes($1) + 1 }
        case .object(let object): object.members.reduce(2) { $0 + escapedBytes($1.key) + 2 + textBytes($1.value) }
        }
    }

    /// The record as one line of JSON (no trailing newline).
    public var jsonLine: String {
        String(decoding: lineBytes.dropLast(), as: UTF8.self)
    }
}

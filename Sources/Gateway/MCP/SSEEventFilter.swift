import NIOCore
import StrictJSON

/// Rewrites an SSE stream one event at a time, as it is relayed: bytes are held only until the blank line that ends
/// the event they belong to, then the event goes on at once — unchanged, unless it has an `id:` (replaced by the
/// gateway's sealed event id) or its data is a JSON-RPC message carrying a list result (filtered by `ListFilter`), or
/// a resource update the caller may not see (dropped, `ListFilter.withholds`). An
/// event larger than `maximumEventBytes` ends the stream: it can be neither relayed unread nor held without bound.
struct SSEEventFilter {
    let filter: ListFilter?
    let maximumEventBytes: Int
    /// The event id the client sees for the upstream's.
    let sealEventID: ((String) -> String)?
    /// The message endpoint the client is told for the upstream's (the `endpoint` event of the legacy transport).
    var rewriteEndpoint: ((String) -> String)?
    /// On a stream whose lists are not filtered (the answer to an ordinary call): withholds only the resource updates
    /// the caller may not see and the messages about other agents' tasks (`ListFilter.withholds`); any other event
    /// goes on as it came, JSON or not, unless its bytes might name an update or a task (`mayNameUpdate`) and its data
    /// cannot be read: then the stream ends.
    var updateFilter: ListFilter?
    private var pending: [UInt8] = []
    /// Bytes of the event being assembled, held until it is complete.
    var pendingBytes: Int { pending.count }
    /// Where the scan for the end of the pending event resumes.
    private var scanned = 0

    init(filter: ListFilter?, maximumEventBytes: Int, sealEventID: ((String) -> String)? = nil) {
        self.filter = filter
        self.maximumEventBytes = maximumEventBytes
        self.sealEventID = sealEventID
    }

    /// An event that cannot be relayed: larger than the bound, or (where lists are filtered) data that is not JSON.
    enum Unreadable: Error, CustomStringConvertible {
        case tooLarge(Int)
        case notJSON
        /// A field name right after a character some SSE readers take for a line break (`hidesField(in:)`).
        case ambiguousLineBreak

        var description: String {
            switch self {
            case .tooLarge(let bound): "an SSE event exceeded \(bound) bytes"
            case .notJSON: "an SSE event's data is not JSON the gateway can read, so what it carries could not be checked"
            case .ambiguousLineBreak:
                "an SSE event has a field name right after a character some clients read as a line break (U+2028, U+2029, "
                    + "NEL, VT, FF, FS, GS or RS), so clients would not all read it as the gateway does"
            }
        }
    }
    /// Whether the stream's first bytes have been seen (a leading byte-order mark is dropped, as readers do).
    private var started = false
    /// The byte-order marks dropped at the start of a stream: U+FEFF, and U+FEFF's UTF-8 bytes read as Latin-1 and
    /// encoded again (`ï»¿`), which `eventsource-parser` (the MCP TypeScript SDK's) strips from its first chunk. Left in,
    /// the gateway read `ï»¿data:` as an unknown field and relayed an event that client reads as data (found by review).
    static let byteOrderMarks: [[UInt8]] = [[0xEF, 0xBB, 0xBF], [0xC3, 0xAF, 0xC2, 0xBB, 0xC2, 0xBF]]

    /// The complete events in what has arrived so far, ready to relay.
    mutating func feed(_ part: ByteBuffer) throws(Unreadable) -> [UInt8] {
        try feed(part, deferringFrom: .max).events
    }

    /// What `feed(_:deferringFrom:timingFrom:)` found: the events ready to relay, and the event it stopped at, unread.
    struct Fed {
        /// Complete events, filtered, ready to relay.
        var events: [UInt8]
        /// A complete event of the size given or more that must be read (parsed) to be relayed, left to
        /// `transformed(_:)`; the events after it stay pending until the next `feed`.
        var deferred: [UInt8]?
        /// The thread CPU time this feed spent on events of the timed size or more (not the deferred one), in
        /// nanoseconds: what such events cost where they were filtered.
        var largeEventNanoseconds: Int64 = 0
    }

    /// The complete events in what has arrived so far (`part` added), filtered, up to the first one of `deferredBytes`
    /// or more that must be read to be relayed: that one is returned as it came, for the caller to filter elsewhere
    /// (`transformed(_:)`) and relay before it feeds this filter again. The events of `timedBytes` or more filtered here
    /// are timed (`Fed.largeEventNanoseconds`).
    mutating func feed(
        _ part: ByteBuffer, deferringFrom deferredBytes: Int, timingFrom timedBytes: Int = .max
    ) throws(Unreadable) -> Fed {
        pending += part.readableBytesView
        while !started {
            // Until the stream's first bytes can no longer be the start of a byte-order mark; every leading mark goes (a
            // real one and then the twice-encoded one: the TypeScript SDK's decoder drops the first, its SSE parser
            // the second).
            if Self.byteOrderMarks.contains(where: { $0.count > pending.count && $0.starts(with: pending) }) { return Fed(events: []) }
            if let mark = Self.byteOrderMarks.first(where: { pending.starts(with: $0) }) {
                pending.removeFirst(mark.count)
            } else {
                started = true
            }
        }
        var fed = Fed(events: [])
        var consumed = 0
        while let end = Self.eventEnd(in: pending, from: max(consumed, scanned)) {
            let event = Array(pending[consumed..<end])
            consumed = end
            if event.count >= deferredBytes, mustRead(event) {
                fed.deferred = event
                break
            }
            let started = event.count >= timedBytes ? CostlyTenants.threadCPUNanoseconds() : nil
            fed.events += try relayable(event)
            if let started { fed.largeEventNanoseconds += CostlyTenants.threadCPUNanoseconds() - started }
        }
        // Emptied for real once no event is pending: an array keeps its capacity, and a quiet stream would keep its
        // largest event's memory.
        if consumed == pending.count { pending = [] } else { pending.removeFirst(consumed) }
        // After a deferred event the rest has not been searched for event ends yet.
        scanned = fed.deferred == nil ? max(0, pending.count - 3) : 0
        if pending.count > maximumEventBytes { throw .tooLarge(maximumEventBytes) }
        return fed
    }

    /// `event` as it is relayed (filtered, its id sealed), or nothing when it is withheld: for an event `feed` deferred.
    /// It reads only this filter's settings, so it may run on another thread while the filter is not fed meanwhile.
    func transformed(_ event: [UInt8]) throws(Unreadable) -> [UInt8] {
        try relayable(event)
    }

    /// Whether relaying `event` means parsing its data (a list result to filter, or an update or task message that may
    /// be withheld), as opposed to relaying it as it came or with its id sealed.
    private func mustRead(_ event: [UInt8]) -> Bool {
        if rewriteEndpoint != nil, Self.isEndpointEvent(event) { return false }
        if filter != nil { return Self.hasField("data", in: event) }
        return updateFilter != nil && Self.mayNameUpdate(event)
    }

    /// What is left when the stream ends: an event whose blank line ends exactly at the end (a last CR, which a
    /// following LF could no longer join), filtered like the others. An event without its blank line is dropped, as
    /// every SSE reader drops it: relaying it rebuilt (with a blank line) would make the client act on an event the
    /// upstream never finished.
    mutating func finish() throws(Unreadable) -> [UInt8] {
        defer { pending = [] }
        guard !pending.isEmpty, Self.eventEnd(in: pending + [0], from: 0) == pending.count else { return [] }
        return try relayable(pending)
    }

    /// The index just past the blank line that ends the first event in `bytes` (line ends CRLF, LF or CR).
    static func eventEnd(in bytes: [UInt8], from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0x0A || byte == 0x0D {
                var next = index + 1
                if byte == 0x0D && next < bytes.count && bytes[next] == 0x0A { next += 1 }
                if next < bytes.count && (bytes[next] == 0x0A || bytes[next] == 0x0D) {
                    // The blank line ends the event. A CR as the very last byte may still be followed by its LF.
                    if bytes[next] == 0x0D && next + 1 == bytes.count { return nil }
                    var end = next + 1
                    if bytes[next] == 0x0D && bytes[end] == 0x0A { end += 1 }
                    return end
                }
                if next >= bytes.count { return nil }
                index = next
                continue
            }
            index += 1
        }
        return nil
    }

    /// `transform(event)`, ending in LF when it ends in a bare CR. In the upstream's stream a CR that ends an event is
    /// never followed by an LF (that LF would belong to it), but the event relayed after it may begin with one once an
    /// event between them is dropped (withheld, or nothing left of it): the client would read that CR and LF as one line
    /// end, and the events would shift (found by the fuzzer). A CR then LF ends a line as a CR alone does.
    private func relayable(_ event: [UInt8]) throws(Unreadable) -> [UInt8] {
        var relayed = try transform(event)
        if relayed.last == 0x0D { relayed.append(0x0A) }
        return relayed
    }

    /// The event with its id sealed and its list result filtered; its exact bytes when neither applies.
    private func transform(_ event: [UInt8]) throws(Unreadable) -> [UInt8] {
        // Read the way the standard reads it, an event must also read that way to every client the gateway relays it to.
        if Self.hidesField(in: event) { throw .ambiguousLineBreak }
        if let rewriteEndpoint, Self.isEndpointEvent(event) { return try Self.endpoint(event, rewrite: rewriteEndpoint) }
        let hasID = sealEventID != nil && Self.hasField("id", in: event)
        let mayFilter = filter != nil && Self.hasField("data", in: event)
        let mayWithhold = filter == nil && updateFilter != nil && Self.mayNameUpdate(event)
        guard hasID || mayFilter || mayWithhold else { return event }
        let lines = Self.lines(of: String(decoding: event, as: UTF8.self))
        var filtered: JSONValue?
        if mayWithhold, let updateFilter {
            // Read as leniently as a client might (repeated keys kept): an update spelled twice is still seen.
            let data = Self.data(of: lines)
            let limits = JSONLimits(maximumDepth: 64, maximumBytes: maximumEventBytes, lenient: true)
            if !data.isEmpty {
                guard let value = try? JSONParser.parse(Array(data.utf8), limits: limits) else {
                    // Data that cannot be read (nested too deep, `Infinity`) but might be a message that is withheld is
                    // not relayed unread — a lenient client could still read it — so the stream ends. Anything else
                    // (a tool's own text that says "task") goes on as it came.
                    if Self.mayBeWithheld(data) { throw .notJSON }
                    // Its id is still the gateway's sealed one (rebuilt below, data as it came).
                    guard hasID else { return event }
                    return rebuilt(lines, filtered: nil)
                }
                if updateFilter.withholds(value) { return [] }
                filtered = updateFilter.withoutWithheld(value)
            }
            guard hasID || filtered != nil else { return event }
        }
        if mayFilter, let filter {
            let data = Self.data(of: lines)
            if !data.isEmpty {
                let limits = JSONLimits(maximumDepth: 64, maximumBytes: maximumEventBytes)
                guard let value = try? JSONParser.parse(Array(data.utf8), limits: limits) else { throw .notJSON }
                // A notification the caller may not see goes, event and all (its id too: the client resumes after
                // the last event it did see).
                if filter.withholds(value) { return [] }
                filtered = filter.filter(value)
            }
        }
        guard hasID || filtered != nil else { return event }
        return rebuilt(lines, filtered: filtered)
    }

    /// The event from its `lines`, with its id sealed and its data replaced by `filtered` (when not nil).
    private func rebuilt(_ lines: [Substring], filtered: JSONValue?) -> [UInt8] {
        var rebuilt = ""
        var wroteData = false
        for line in lines where !line.isEmpty {
            if let filtered, Self.value(of: "data", on: line) != nil {
                if !wroteData { rebuilt += "data: " + filtered.serialized + "\n" }
                wroteData = true
            } else if let sealEventID, let value = Self.value(of: "id", on: line) {
                // An empty id resets the client's last event id; it stays empty.
                if value.isEmpty {
                    rebuilt += "id\n"
                    continue
                }
                // An id that could not come back is dropped rather than sealed into one the client would keep and
                // present for a position the upstream cannot be sent (or that this gateway would not open again). An
                // id with a NUL is ignored by every SSE client anyway (the HTML standard's parsing rules); the client
                // keeps its last event id.
                guard Self.canComeBack(value) else { continue }
                let sealed = sealEventID(value)
                guard sealed.utf8.count <= SessionHandles.maximumHandleBytes else { continue }
                rebuilt += "id: " + sealed + "\n"
            } else {
                rebuilt += line + "\n"
            }
        }
        // Nothing left (an event of only an ignored id): nothing to relay, not a lone blank line.
        guard !rebuilt.isEmpty else { return [] }
        return Array((rebuilt + "\n").utf8)
    }

    /// Whether the upstream's event id `value` survives the trip back as `Last-Event-ID` exactly: visible ASCII, with
    /// spaces and tabs inside only. A control character cannot go in a field value (NUL also makes SSE clients ignore
    /// the id); HTTP parsers trim a space or tab at either end, and servers read other bytes each their own way (Latin-1
    /// or UTF-8, a byte that is not UTF-8 repaired), so the upstream would read another id. The ids servers issue
    /// (numbers, `<stream>_<n>`, UUIDs) are all visible ASCII.
    static func canComeBack(_ value: String) -> Bool {
        guard let first = value.utf8.first, let last = value.utf8.last else { return true }
        let blank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        return !blank(first) && !blank(last) && value.utf8.allSatisfy { (0x20...0x7E).contains($0) || $0 == 0x09 }
    }

    /// The value of field `name` on `line`, or nil when the line is another field: the line is `name` alone (an empty
    /// value) or `name:` and the value, one space after the colon dropped, as the HTML standard's parsing rules read
    /// it. Compared as bytes, never as characters: a combining mark after the colon joins it into one character, which
    /// hid `id:` and `data:` lines from a character comparison while every SSE client still reads them (found by
    /// review: an id relayed unsealed, a list relayed unfiltered).
    static func value(of name: String, on line: Substring) -> String? {
        var rest = line.utf8[...]
        guard rest.starts(with: name.utf8) else { return nil }
        rest = rest.dropFirst(name.utf8.count)
        guard let colon = rest.first else { return "" }
        guard colon == UInt8(ascii: ":") else { return nil }
        rest = rest.dropFirst()
        if rest.first == 0x20 { rest = rest.dropFirst() }
        return String(decoding: rest, as: UTF8.self)
    }

    /// The lines of an event's `text`, split at each CR and LF byte (a CR LF leaves an empty line between them, which
    /// every reader of the lines skips, as no event holds an empty line of its own). Split as bytes, never as
    /// characters: the text is the upstream's, and a character split compared each character with the line ends, which
    /// sorted a run of combining marks every time (an event with an id and 20,000 marks took seconds of the event loop,
    /// a 1 MiB one minutes: found by review).
    static func lines(of text: String) -> [Substring] {
        text.utf8.split(omittingEmptySubsequences: false, whereSeparator: { $0 == 0x0A || $0 == 0x0D }).map { Substring($0) }
    }

    /// The event's data: its `data` lines' values joined by line feeds.
    static func data(of lines: [Substring]) -> String {
        lines.compactMap { value(of: "data", on: $0) }.joined(separator: "\n")
    }

    /// Whether the event could hold a `notifications/resources/updated` or a message about a task: its bytes contain
    /// `updated`, `task` in any case, or a `\u` escape (the only way JSON can spell a letter otherwise). Events without
    /// any are relayed unread.
    static func mayNameUpdate(_ event: [UInt8]) -> Bool {
        let word = Array("updated".utf8)
        var index = 0
        while index < event.count {
            if event[index] == UInt8(ascii: "\\"), index + 1 < event.count, event[index + 1] == UInt8(ascii: "u") { return true }
            if event[index] == word[0], event[index...].starts(with: word) { return true }
            // `task` in any case: a message about a task (`taskId`, `task_id`, `related-task`, `notifications/tasks`).
            if event[index] | 0x20 == UInt8(ascii: "t"), index + 3 < event.count, event[index + 1] | 0x20 == UInt8(ascii: "a"),
                event[index + 2] | 0x20 == UInt8(ascii: "s"), event[index + 3] | 0x20 == UInt8(ascii: "k")
            {
                return true
            }
            index += 1
        }
        return false
    }

    /// Whether unreadable `data` could be a message `ListFilter.withholds`: one whose method is
    /// `notifications/resources/updated` or `notifications/tasks…`, or that carries a related-task `_meta` — or any
    /// escape, which could spell those.
    static func mayBeWithheld(_ data: String) -> Bool {
        data.utf8.contains(UInt8(ascii: "\\")) || data.utf8.firstRange(of: "notifications/".utf8) != nil
            || data.utf8.firstRange(of: "related-task".utf8) != nil
    }

    /// Whether the event is an `endpoint` event (legacy HTTP+SSE: where the client posts its messages).
    /// Read as bytes, line by line (an `event` line's value is `endpoint`, one space after the colon dropped), so that
    /// events relayed unread never become text.
    static func isEndpointEvent(_ event: [UInt8]) -> Bool {
        let field = Array("event:".utf8)
        let endpoint = Array("endpoint".utf8)
        var start = 0
        while start < event.count {
            var end = start
            while end < event.count, event[end] != 0x0A, event[end] != 0x0D { end += 1 }
            let line = event[start..<end]
            if line.starts(with: field) {
                var value = line.dropFirst(field.count)
                if value.first == 0x20 { value = value.dropFirst() }
                if value.elementsEqual(endpoint) { return true }
            }
            start = end + 1
        }
        return false
    }

    /// The endpoint event with its target replaced: the upstream's path and query (an absolute URL is reduced to its
    /// path and query) go to `rewrite`, and its event id (if any) dropped. An endpoint that is not a path is refused: the stream ends.
    static func endpoint(_ event: [UInt8], rewrite: (String) -> String) throws(Unreadable) -> [UInt8] {
        let lines = Self.lines(of: String(decoding: event, as: UTF8.self))
        // Searched as bytes, like the lines: the text is the upstream's.
        var target = Substring(data(of: lines))
        if let scheme = target.utf8.firstRange(of: "://".utf8) {
            let afterHost = target.utf8[scheme.upperBound...]
            target = afterHost.firstIndex(of: UInt8(ascii: "/")).map { target[$0...] } ?? "/"
        }
        // It becomes a request line's target: visible ASCII only (a blank or control byte would split the line).
        guard target.utf8.first == UInt8(ascii: "/"), !target.utf8.starts(with: "//".utf8),
            target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else {
            throw .notJSON
        }
        var rebuilt = ""
        var wroteData = false
        for line in lines where !line.isEmpty {
            if value(of: "data", on: line) != nil {
                if !wroteData { rebuilt += "data: " + rewrite(String(target)) + "\n" }
                wroteData = true
            } else if value(of: "id", on: line) != nil {
                // The upstream's event id never reaches the client; nothing resumes at an endpoint event, so it goes.
                continue
            } else {
                rebuilt += line + "\n"
            }
        }
        return Array((rebuilt + "\n").utf8)
    }

    /// Whether a field name (`id`, `data`, `event`, `retry`) follows, in `event`, a character that some SSE readers take
    /// for a line break though the standard does not: VT, FF, FS, GS, RS, NEL, U+2028 or U+2029 (Python's
    /// `str.splitlines`, which httpx-sse, the MCP Python SDK 1.x's reader, used before 0.4.2). Such a reader sees a field
    /// the gateway does not: an id it never sealed, data it never filtered (found by review). A field is its name then
    /// a colon or the end of the line, as such a reader reads it; prose after those characters (`identity`,
    /// `database`) is no field and goes on.
    static func hidesField(in event: [UInt8]) -> Bool {
        var index = 0
        while index < event.count {
            if let after = lineBreakEnd(in: event, at: index, alsoStandard: false),
                let name = fieldNames.first(where: { event[after...].starts(with: $0) })
            {
                let end = after + name.count
                if end == event.count || event[end] == UInt8(ascii: ":") || lineBreakEnd(in: event, at: end, alsoStandard: true) != nil {
                    return true
                }
            }
            index += 1
        }
        return false
    }
    private static let fieldNames = ["id", "data", "event", "retry"].map { Array($0.utf8) }

    /// Where the line break at `index` ends, for a character that Python's `str.splitlines` takes for one and the SSE
    /// standard does not (VT, FF, FS, GS, RS, NEL, U+2028, U+2029), and with `alsoStandard` for CR and LF too; nil when
    /// there is none there.
    private static func lineBreakEnd(in event: [UInt8], at index: Int, alsoStandard: Bool) -> Int? {
        switch event[index] {
        case 0x0A, 0x0D: alsoStandard ? index + 1 : nil
        case 0x0B, 0x0C, 0x1C, 0x1D, 0x1E: index + 1
        case 0xC2 where index + 1 < event.count && event[index + 1] == 0x85: index + 2
        case 0xE2 where index + 2 < event.count && event[index + 1] == 0x80 && (event[index + 2] | 1) == 0xA9: index + 3
        default: nil
        }
    }

    /// Whether a line of `event` starts with `field` followed by `:` or the end of the line.
    static func hasField(_ field: String, in event: [UInt8]) -> Bool {
        let name = Array(field.utf8)
        var lineStart = true
        var index = 0
        while index < event.count {
            if lineStart && event[index...].starts(with: name) {
                let after = index + name.count
                if after == event.count || event[after] == UInt8(ascii: ":") || event[after] == 0x0A || event[after] == 0x0D { return true }
            }
            lineStart = event[index] == 0x0A || event[index] == 0x0D
            index += 1
        }
        return false
    }
}

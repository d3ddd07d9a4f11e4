import NIOCore
import StrictJSON

/// Filters an SSE stream one event at a time, as it is relayed: bytes are held only until the blank line that ends
/// the event they belong to, then the event goes on at once — unchanged, unless its data is a JSON-RPC message
/// carrying a list result, which is filtered (`ListFilter`). An event larger than `maximumEventBytes` ends the stream:
/// it can be neither relayed unread nor held without bound.
struct SSEEventFilter {
    let filter: ListFilter
    let maximumEventBytes: Int
    private var pending: [UInt8] = []
    /// Where the scan for the end of the pending event resumes.
    private var scanned = 0

    init(filter: ListFilter, maximumEventBytes: Int) {
        self.filter = filter
        self.maximumEventBytes = maximumEventBytes
    }

    /// An event was larger than the bound.
    struct EventTooLarge: Error {}

    /// The complete events in what has arrived so far, ready to relay.
    mutating func feed(_ part: ByteBuffer) throws(EventTooLarge) -> [UInt8] {
        pending += part.readableBytesView
        var output: [UInt8] = []
        var consumed = 0
        while let end = Self.eventEnd(in: pending, from: max(consumed, scanned)) {
            output += transform(Array(pending[consumed..<end]))
            consumed = end
        }
        pending.removeFirst(consumed)
        scanned = max(0, pending.count - 3)
        if pending.count > maximumEventBytes { throw EventTooLarge() }
        return output
    }

    /// What is left when the stream ends (an event without its closing blank line), filtered like the others.
    mutating func finish() -> [UInt8] {
        defer { pending = [] }
        return pending.isEmpty ? [] : transform(pending)
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
                    var end = next + 1
                    if bytes[next] == 0x0D && end < bytes.count && bytes[end] == 0x0A { end += 1 }
                    if bytes[next] == 0x0D && end == bytes.count { return nil }  // CR at the end: LF may follow
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

    /// The event, filtered if its data is a list result; otherwise its exact bytes.
    private func transform(_ event: [UInt8]) -> [UInt8] {
        let text = String(decoding: event, as: UTF8.self)
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
        let dataLines = lines.filter { $0.hasPrefix("data:") }
        guard !dataLines.isEmpty else { return event }
        let data = dataLines.map { line -> Substring in
            let value = line.dropFirst(5)
            return value.first == " " ? value.dropFirst() : value
        }.joined(separator: "\n")
        guard let value = try? JSONParser.parse(Array(data.utf8)), let filtered = filter.filter(value) else { return event }
        var rebuilt = ""
        var wroteData = false
        for line in lines where !line.isEmpty {
            if line.hasPrefix("data:") {
                if !wroteData { rebuilt += "data: " + filtered.serialized + "\n" }
                wroteData = true
            } else {
                rebuilt += line + "\n"
            }
        }
        return Array((rebuilt + "\n").utf8)
    }
}

/// What an upstream's answer is, by its `Content-Type`, read the one way the gateway relays it.
///
/// SSE answers are relayed one event at a time through the filters (`SSEEventFilter`); anything else as it came or
/// collected as JSON. Clients decide SSE differently: the MCP TypeScript SDK when `text/event-stream` occurs anywhere
/// in the value, the Python SDK when the value starts with it. So the media type itself (up to `;`, blanks trimmed,
/// case-insensitive) decides, the client is told exactly `text/event-stream` for an SSE answer, and a value that names
/// `event-stream` anywhere else is ambiguous and refused.
enum AnswerMediaType: Equatable {
    /// `text/event-stream`, with or without parameters.
    case eventStream
    /// Anything else (JSON, or no `Content-Type`).
    case other
    /// A value that mentions `event-stream` outside its media type (`application/json; profile="text/event-stream"`).
    case ambiguous(String)

    /// What the client is told an SSE answer is.
    static let eventStreamType = "text/event-stream"

    /// The type of an answer with `contentType` (nil: no `Content-Type`).
    init(_ contentType: String?) {
        // The common answers without a copy of their bytes.
        guard let contentType, !HeaderText.isName(contentType, "application/json") else {
            self = .other
            return
        }
        if HeaderText.isName(contentType, Self.eventStreamType) {
            self = .eventStream
            return
        }
        let bytes = Array(contentType.utf8)
        let end = bytes.firstIndex(of: UInt8(ascii: ";")) ?? bytes.endIndex
        let isBlank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        let start = bytes[..<end].firstIndex { !isBlank($0) } ?? end
        let last = bytes[start..<end].lastIndex { !isBlank($0) }.map { $0 + 1 } ?? start
        let type = Array("text/event-stream".utf8)
        if last - start == type.count, zip(bytes[start..<last], type).allSatisfy({ Self.lowercased($0) == $1 }) {
            self = .eventStream
        } else if Self.mentionsEventStream(bytes) {
            self = .ambiguous(contentType)
        } else {
            self = .other
        }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 { (0x41...0x5A).contains(byte) ? byte + 0x20 : byte }

    /// Whether `event-stream` occurs anywhere in `bytes`, in any case.
    private static func mentionsEventStream(_ bytes: [UInt8]) -> Bool {
        let needle = Array("event-stream".utf8)
        guard bytes.count >= needle.count else { return false }
        for start in 0...(bytes.count - needle.count)
        where zip(bytes[start..<start + needle.count], needle).allSatisfy({ lowercased($0) == $1 }) {
            return true
        }
        return false
    }
}

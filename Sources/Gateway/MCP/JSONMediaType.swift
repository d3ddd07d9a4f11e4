/// The `Content-Type` of a JSON-RPC POST, read strictly (RFC 9110 8.3.1: `type "/" subtype *( OWS ";" OWS
/// [ name "=" ( token / quoted-string ) ] )`).
///
/// The gateway decides on the body read as UTF-8. An upstream may decode it by the header's `charset` instead (the
/// MCP TypeScript SDK and Express's `body-parser` do, through iconv-lite, which knows UTF-7 and UTF-16): under
/// `charset=utf-7`, pure ASCII that the gateway reads as one string holds quotes, members and whole messages for the
/// upstream. So a body is taken only as `application/json`, with no `charset` or `charset=utf-8`, once; and the
/// upstream is told plain `application/json` (`canonical`), so that no parser that reads parameters differently
/// (a `;` inside a quoted value, say) can find another charset in what the client sent.
enum JSONMediaType {
    /// What the upstream is told a forwarded POST body is.
    static let canonical = "application/json"

    /// Why `value` is not a `Content-Type` the gateway takes a JSON-RPC body as; nil when it is one.
    static func problem(_ value: String) -> String? {
        // What nearly every client sends, without a copy of its bytes.
        if HeaderText.isName(value, canonical) { return nil }
        var bytes = Array(value.utf8)[...]
        let type = token(&bytes)
        guard bytes.first == UInt8(ascii: "/") else { return "Content-Type must be application/json" }
        bytes.removeFirst()
        let subtype = token(&bytes)
        guard HeaderText.isName(type, "application"), HeaderText.isName(subtype, "json") else {
            return "Content-Type must be application/json"
        }
        var charsetSeen = false
        while true {
            skipBlanks(&bytes)
            guard let separator = bytes.first else { return nil }
            guard separator == UInt8(ascii: ";") else { return "Content-Type has a malformed parameter" }
            bytes.removeFirst()
            skipBlanks(&bytes)
            // RFC 9110 allows an empty parameter (`;;`, or a trailing `;`).
            if bytes.isEmpty || bytes.first == UInt8(ascii: ";") { continue }
            let name = token(&bytes)
            guard !name.isEmpty, bytes.first == UInt8(ascii: "=") else { return "Content-Type has a malformed parameter" }
            bytes.removeFirst()
            guard let parameterValue = parameterValue(&bytes) else { return "Content-Type has a malformed parameter" }
            guard HeaderText.isName(name, "charset") else { continue }
            guard !charsetSeen else { return "Content-Type names its charset more than once" }
            charsetSeen = true
            guard HeaderText.isName(parameterValue, "utf-8") else {
                return "Content-Type charset must be utf-8 (JSON-RPC bodies are UTF-8)"
            }
        }
    }

    /// A token at the start of `bytes` (possibly empty), taken off them, as text.
    private static func token(_ bytes: inout ArraySlice<UInt8>) -> String {
        let end = bytes.firstIndex { !HTTP1Syntax.isTokenByte($0) } ?? bytes.endIndex
        defer { bytes = bytes[end...] }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// A parameter's value, a token or a quoted string (unquoted, its escapes resolved), taken off `bytes`; nil when
    /// it is neither (empty, an unclosed quote, a byte a quoted string may not hold).
    private static func parameterValue(_ bytes: inout ArraySlice<UInt8>) -> String? {
        guard bytes.first == UInt8(ascii: "\"") else {
            let value = token(&bytes)
            return value.isEmpty ? nil : value
        }
        bytes.removeFirst()
        var value: [UInt8] = []
        while let byte = bytes.popFirst() {
            switch byte {
            case UInt8(ascii: "\""): return String(decoding: value, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = bytes.popFirst(), escaped == 0x09 || (escaped >= 0x20 && escaped != 0x7F) else { return nil }
                value.append(escaped)
            case 0x09, 0x20...0x7E, 0x80...0xFF: value.append(byte)
            default: return nil
            }
        }
        return nil
    }

    private static func skipBlanks(_ bytes: inout ArraySlice<UInt8>) {
        while let byte = bytes.first, byte == 0x20 || byte == 0x09 { bytes.removeFirst() }
    }
}

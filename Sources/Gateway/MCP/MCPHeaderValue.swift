import Identity

/// Values of MCP headers that mirror the body (`Mcp-Name`, `Mcp-Param-*`): non-ASCII text travels as
/// `=?base64?…?=` (MCP 2026-07-28).
enum MCPHeaderValue {
    /// Whether `name` is an `Mcp-Param-*` header (any case), without allocating: checked for every header of every
    /// request.
    static func isParamHeader(_ name: String) -> Bool {
        name.utf8.count > "mcp-param-".utf8.count && HeaderText.hasPrefix(name, "mcp-param-")
    }

    /// The first `Mcp-Param-*` header that appears more than once (lower-cased), if any.
    static func repeatedParamHeader(in headers: some Sequence<(name: String, value: String)>) -> String? {
        var seen: Set<String> = []  // a set: thousands of such headers fit in a request head
        for (name, _) in headers where isParamHeader(name) {
            let lowered = name.lowercased()
            if !seen.insert(lowered).inserted { return lowered }
        }
        return nil
    }

    /// `=?base64?…?=` → its UTF-8 text (nil when it is not valid base64 or UTF-8); anything else as is.
    static func decode(_ value: String) -> String? {
        guard value.hasPrefix("=?base64?"), value.hasSuffix("?=") else { return value }
        let inner = Array(value.utf8.dropFirst(9).dropLast(2))
        guard let bytes = base64(inner) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    /// `text` as a header value: as is when it is visible ASCII without surrounding spaces, `=?base64?…?=` otherwise.
    static func encode(_ text: String) -> String {
        let plain = text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F } && text.first != " " && text.last != " "
        guard !plain || text.hasPrefix("=?base64?") else { return text }
        return "=?base64?" + Base64URL.encodeStandard(text.utf8) + "?="
    }

    /// Standard base64 (RFC 4648 §4, padding optional).
    static func base64(_ text: [UInt8]) -> [UInt8]? {
        var output: [UInt8] = []
        output.reserveCapacity(text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for byte in text {
            let value: UInt32
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(byte - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(byte - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="):
                padding += 1
                continue
            default: return nil
            }
            guard padding == 0 else { return nil }
            accumulator = accumulator << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        guard padding <= 2, bits < 6 else { return nil }
        return output
    }
}

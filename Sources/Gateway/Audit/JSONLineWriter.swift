import Identity
import StrictJSON

/// Writes one JSON object as bytes, member by member, for the audit log: no intermediate `JSONValue` tree and no
/// `String` concatenation on the hot path.
///
/// Strings are escaped so that every record is one line for any reader: besides what JSON requires (quote,
/// backslash, C0 controls), DEL, C1 controls (U+0085 NEL among them), U+2028, U+2029 and the Unicode
/// noncharacters are written as `\u` escapes. Input that is not valid UTF-8 cannot occur (Swift strings are).
struct JSONLineWriter {
    /// The bytes written so far.
    private(set) var bytes: [UInt8]
    private var needsComma = false

    /// Starts an object, reserving `capacity` bytes.
    init(capacity: Int = 512) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    /// `"key":"value"` (escaped).
    mutating func string(_ key: StaticString, _ value: String) {
        member(key)
        Self.appendQuoted(value, to: &bytes)
    }

    /// `"key":"value"` when `value` is not nil.
    mutating func optionalString(_ key: StaticString, _ value: String?) {
        if let value { string(key, value) }
    }

    /// `"key":<integer>`.
    mutating func integer(_ key: StaticString, _ value: Int) {
        member(key)
        Self.appendInteger(value, to: &bytes)
    }

    /// `"key":"2026-11-25T01:07:29.777Z"` for a time in milliseconds since 1970 (UTC), written in place.
    mutating func timestamp(_ key: StaticString, _ unixMilliseconds: Int64) {
        member(key)
        bytes.append(UInt8(ascii: "\""))
        AuditRecord.appendTimestamp(unixMilliseconds, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// `"key":<milliseconds with three decimals>` for a duration in microseconds (`1234` → `1.234`, `-5` → `-0.005`).
    mutating func milliseconds(_ key: StaticString, microseconds: Int) {
        member(key)
        if microseconds < 0 { bytes.append(UInt8(ascii: "-")) }
        Self.appendInteger(abs(microseconds / 1000), to: &bytes)
        let fraction = abs(microseconds % 1000)
        bytes.append(UInt8(ascii: "."))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction / 100))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction % 10))
    }

    /// `"key":<raw JSON>`: bytes that are already valid JSON text on one line.
    mutating func raw(_ key: StaticString, _ json: some Sequence<UInt8>) {
        member(key)
        bytes.append(contentsOf: json)
    }

    /// `"key":<value>`, serialized with the same escaping as strings.
    mutating func value(_ key: StaticString, _ value: JSONValue) {
        member(key)
        Self.append(value, to: &bytes)
    }

    /// `"key":{"keys":[...],"sha256":"..."}`: the top-level argument names and a digest.
    mutating func redactedArguments(_ key: StaticString, keys: [String], _ digest: SHA256Digest) {
        member(key)
        bytes.append(contentsOf: #"{"keys":["#.utf8)
        for (position, name) in keys.enumerated() {
            if position > 0 { bytes.append(UInt8(ascii: ",")) }
            Self.appendQuoted(name, to: &bytes)
        }
        bytes.append(contentsOf: #"],"sha256":""#.utf8)
        digest.appendHex(to: &bytes)
        bytes.append(contentsOf: #""}"#.utf8)
    }

    /// Closes the object and ends the line.
    mutating func finishLine() -> [UInt8] {
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    private mutating func member(_ key: StaticString) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = true
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    /// Serializes a JSON value with line-safe escaping.
    static func append(_ value: JSONValue, to bytes: inout [UInt8]) {
        switch value {
        case .null: bytes.append(contentsOf: "null".utf8)
        case .bool(let flag): bytes.append(contentsOf: (flag ? "true" : "false").utf8)
        case .number(let number): bytes.append(contentsOf: number.literal.utf8)
        case .string(let text): appendQuoted(text, to: &bytes)
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                append(element, to: &bytes)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let object):
            bytes.append(UInt8(ascii: "{"))
            for (index, member) in object.members.enumerated() {
                if index > 0 { bytes.append(UInt8(ascii: ",")) }
                appendQuoted(member.key, to: &bytes)
                bytes.append(UInt8(ascii: ":"))
                append(member.value, to: &bytes)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// A quoted, escaped JSON string. Plain ASCII runs are copied as they are.
    static func appendQuoted(_ text: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            var index = 0
            while index < utf8.count {
                let byte = utf8[index]
                if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                    // A run of bytes that need no escape is copied in one piece.
                    let start = index
                    index += 1
                    while index < utf8.count, utf8[index] >= 0x20, utf8[index] < 0x7F, utf8[index] != UInt8(ascii: "\""),
                        utf8[index] != UInt8(ascii: "\\")
                    {
                        index += 1
                    }
                    bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(byte)
                    index += 1
                } else if byte < 0x80 {
                    appendEscape(UInt32(byte), to: &bytes)
                    index += 1
                } else {
                    let (scalar, length) = decodeScalar(utf8, at: index)
                    if needsEscape(scalar) {
                        appendEscape(scalar, to: &bytes)
                    } else {
                        bytes.append(contentsOf: utf8[index..<index + length])
                    }
                    index += length
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// C1 controls, the Unicode line and paragraph separators, and noncharacters.
    static func needsEscape(_ scalar: UInt32) -> Bool {
        (0x80...0x9F).contains(scalar) || scalar == 0x2028 || scalar == 0x2029 || (0xFDD0...0xFDEF).contains(scalar)
            || scalar & 0xFFFE == 0xFFFE
    }

    private static func decodeScalar(_ utf8: UnsafeBufferPointer<UInt8>, at index: Int) -> (UInt32, Int) {
        let lead = utf8[index]
        // Swift strings hold valid UTF-8, so the continuation bytes are there.
        if lead < 0xE0 { return (UInt32(lead & 0x1F) << 6 | UInt32(utf8[index + 1] & 0x3F), 2) }
        if lead < 0xF0 {
            return (UInt32(lead & 0x0F) << 12 | UInt32(utf8[index + 1] & 0x3F) << 6 | UInt32(utf8[index + 2] & 0x3F), 3)
        }
        return (
            UInt32(lead & 0x07) << 18 | UInt32(utf8[index + 1] & 0x3F) << 12 | UInt32(utf8[index + 2] & 0x3F) << 6
                | UInt32(utf8[index + 3] & 0x3F), 4
        )
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private static func appendEscape(_ scalar: UInt32, to bytes: inout [UInt8]) {
        switch scalar {
        case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
        case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
        case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
        default:
            if scalar > 0xFFFF {
                // Supplementary noncharacters: a UTF-16 surrogate pair, as JSON requires.
                let value = scalar - 0x10000
                appendUnit(0xD800 + (value >> 10), to: &bytes)
                appendUnit(0xDC00 + (value & 0x3FF), to: &bytes)
            } else {
                appendUnit(scalar, to: &bytes)
            }
        }
    }

    private static func appendUnit(_ unit: UInt32, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u")])
        for shift in stride(from: 12, through: 0, by: -4) { bytes.append(hexDigits[Int((unit >> UInt32(shift)) & 0xF)]) }
    }

    /// Decimal digits of `value`.
    static func appendInteger(_ value: Int, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var digits:
            (
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8
            ) =
                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[19 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude > 0
            bytes.append(contentsOf: buffer[(20 - count)...])
        }
    }
}

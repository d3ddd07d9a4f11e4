import Identity
import StrictJSON
import TLS

/// Where JSON text is written: a byte array, or a `FixedByteSink` over scratch memory.
protocol JSONByteSink {
    /// Appends one byte.
    mutating func put(_ byte: UInt8)
    /// Appends `bytes`.
    mutating func put(_ bytes: UnsafeRawBufferPointer)
}

extension JSONByteSink {
    /// Appends the UTF-8 bytes of `text`.
    @inline(__always)
    mutating func put(_ text: StaticString) {
        text.withUTF8Buffer { put(UnsafeRawBufferPointer($0)) }
    }

    /// Appends the UTF-8 bytes of `text`.
    mutating func put(string text: String) {
        var text = text
        text.withUTF8 { put(UnsafeRawBufferPointer($0)) }
    }
}

extension Array: JSONByteSink where Element == UInt8 {
    mutating func put(_ byte: UInt8) { append(byte) }
    mutating func put(_ bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
}

/// Bytes written into memory of a fixed size (scratch on the stack). An array checks that its storage is uniquely
/// referenced on every append (a call into the runtime, for every byte of an audit line); this only compares the
/// count with the size. What does not fit is not written: the sink is then `overflowed` for good, and the caller
/// writes its text again into an array.
struct FixedByteSink: JSONByteSink {
    private let memory: UnsafeMutableRawBufferPointer
    /// How many bytes were written.
    private(set) var count = 0
    /// Whether a write did not fit (and nothing after it was written).
    private(set) var overflowed = false

    /// A sink writing into `memory`, which must outlive it.
    init(_ memory: UnsafeMutableRawBufferPointer) { self.memory = memory }

    /// The bytes written.
    var written: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: memory[..<count]) }

    @inline(__always)
    mutating func put(_ byte: UInt8) {
        guard !overflowed, count < memory.count else {
            overflowed = true
            return
        }
        memory[count] = byte
        count += 1
    }

    @inline(__always)
    mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard !overflowed, bytes.count <= memory.count - count else {
            overflowed = true
            return
        }
        UnsafeMutableRawBufferPointer(rebasing: memory[count..<count + bytes.count]).copyMemory(from: bytes)
        count += bytes.count
    }
}

/// Writes one JSON object as bytes, member by member, for the audit log: no intermediate `JSONValue` tree and no
/// `String` concatenation on the hot path. Generic over where the bytes go (`JSONByteSink`), and specialised for
/// each.
///
/// Strings are escaped so that every record is one line for any reader: besides what JSON requires (quote,
/// backslash, C0 controls), DEL, C1 controls (U+0085 NEL among them), U+2028, U+2029 and the Unicode
/// noncharacters are written as `\u` escapes. Input that is not valid UTF-8 cannot occur (Swift strings are).
struct JSONLineWriter<Sink: JSONByteSink> {
    /// Where the line is written (an array, or scratch memory).
    private(set) var sink: Sink
    private var needsComma = false

    /// Starts an object in `sink`.
    init(into sink: Sink) {
        self.sink = sink
        self.sink.put(UInt8(ascii: "{"))
    }

    /// `"key":"value"` (escaped).
    mutating func string(_ key: StaticString, _ value: String) {
        member(key)
        JSONText.appendQuoted(value, to: &sink)
    }

    /// `"key":"value"` when `value` is not nil.
    mutating func optionalString(_ key: StaticString, _ value: String?) {
        if let value { string(key, value) }
    }

    /// `"key":<integer>`.
    mutating func integer(_ key: StaticString, _ value: Int) {
        member(key)
        JSONText.appendInteger(value, to: &sink)
    }

    /// `"key":"2026-11-25T01:07:29.777Z"` for a time in milliseconds since 1970 (UTC), written in place.
    mutating func timestamp(_ key: StaticString, _ unixMilliseconds: Int64) {
        member(key)
        sink.put(UInt8(ascii: "\""))
        AuditRecord.appendTimestamp(unixMilliseconds, to: &sink)
        sink.put(UInt8(ascii: "\""))
    }

    /// `"key":<milliseconds with three decimals>` for a duration in microseconds (`1234` → `1.234`, `-5` → `-0.005`).
    mutating func milliseconds(_ key: StaticString, microseconds: Int) {
        member(key)
        if microseconds < 0 { sink.put(UInt8(ascii: "-")) }
        JSONText.appendInteger(abs(microseconds / 1000), to: &sink)
        let fraction = abs(microseconds % 1000)
        sink.put(UInt8(ascii: "."))
        sink.put(UInt8(ascii: "0") + UInt8(fraction / 100))
        sink.put(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        sink.put(UInt8(ascii: "0") + UInt8(fraction % 10))
    }

    /// `"key":<value>`, serialized with the same escaping as strings.
    mutating func value(_ key: StaticString, _ value: JSONValue) {
        member(key)
        JSONText.append(value, to: &sink)
    }

    /// `"key":{"keys":[...],"sha256":"..."}`: the top-level argument names and a digest.
    mutating func redactedArguments(_ key: StaticString, keys: [String], _ digest: SHA256Digest) {
        member(key)
        sink.put(#"{"keys":["#)
        for (position, name) in keys.enumerated() {
            if position > 0 { sink.put(UInt8(ascii: ",")) }
            JSONText.appendQuoted(name, to: &sink)
        }
        sink.put(#"],"sha256":""#)
        JSONText.appendHex(digest, to: &sink)
        sink.put(#""}"#)
    }

    /// Closes the object and ends the line.
    mutating func finishLine() {
        sink.put(UInt8(ascii: "}"))
        sink.put(UInt8(ascii: "\n"))
    }

    @inline(__always)
    private mutating func member(_ key: StaticString) {
        if needsComma { sink.put(UInt8(ascii: ",")) }
        needsComma = true
        sink.put(UInt8(ascii: "\""))
        sink.put(key)
        sink.put(UInt8(ascii: "\""))
        sink.put(UInt8(ascii: ":"))
    }
}

extension JSONLineWriter where Sink == [UInt8] {
    /// Reserves room for `capacity` bytes in the array written to.
    mutating func reserveCapacity(_ capacity: Int) { sink.reserveCapacity(capacity) }
}

/// JSON text written into a `JSONByteSink`, with the audit line's escaping (`JSONLineWriter`).
enum JSONText {
    /// Serializes a JSON value with line-safe escaping.
    static func append(_ value: JSONValue, to bytes: inout some JSONByteSink) {
        switch value {
        case .null: bytes.put("null")
        case .bool(let flag): bytes.put(flag ? "true" : "false")
        case .number(let number): bytes.put(string: number.literal)
        case .string(let text): appendQuoted(text, to: &bytes)
        case .array(let elements):
            bytes.put(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { bytes.put(UInt8(ascii: ",")) }
                append(element, to: &bytes)
            }
            bytes.put(UInt8(ascii: "]"))
        case .object(let object):
            bytes.put(UInt8(ascii: "{"))
            for (index, member) in object.members.enumerated() {
                if index > 0 { bytes.put(UInt8(ascii: ",")) }
                appendQuoted(member.key, to: &bytes)
                bytes.put(UInt8(ascii: ":"))
                append(member.value, to: &bytes)
            }
            bytes.put(UInt8(ascii: "}"))
        }
    }

    /// A quoted, escaped JSON string. Plain ASCII runs are copied as they are.
    static func appendQuoted(_ text: String, to bytes: inout some JSONByteSink) {
        bytes.put(UInt8(ascii: "\""))
        // Read in place (a native or literal string, which every string here is); any other is copied first.
        if text.utf8.withContiguousStorageIfAvailable({ appendEscaped($0, to: &bytes) }) == nil {
            var copy = text
            copy.withUTF8 { appendEscaped($0, to: &bytes) }
        }
        bytes.put(UInt8(ascii: "\""))
    }

    /// The UTF-8 bytes of a string, escaped (without quotes).
    private static func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>, to bytes: inout some JSONByteSink) {
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
                bytes.put(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[start..<index])))
            } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                bytes.put(UInt8(ascii: "\\"))
                bytes.put(byte)
                index += 1
            } else if byte < 0x80 {
                appendEscape(UInt32(byte), to: &bytes)
                index += 1
            } else {
                let (scalar, length) = decodeScalar(utf8, at: index)
                if needsEscape(scalar) {
                    appendEscape(scalar, to: &bytes)
                } else {
                    bytes.put(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[index..<index + length])))
                }
                index += length
            }
        }
    }

    /// C1 controls, the Unicode line and paragraph separators, noncharacters, and the characters that show nothing or
    /// change how a line reads on screen: bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E–F,
    /// U+202A–E, U+2066–9), zero-width and invisible characters (U+00AD, U+034F, U+115F–60, U+17B4–5, U+180E,
    /// U+200B–D, U+2060–4, U+3164, U+FFA0, the byte order mark), variation selectors, interlinear annotations and tag
    /// characters (U+E0000–7F, which spell hidden ASCII). A caller's tool name with U+202E in it would otherwise show a
    /// terminal or viewer the rest of the line reversed, and `read_file` followed by tags would read as `read_file`.
    static func needsEscape(_ scalar: UInt32) -> Bool {
        switch scalar {
        case 0x80...0x9F, 0x2028, 0x2029, 0xFDD0...0xFDEF: true
        case 0x061C, 0x200B...0x200F, 0x202A...0x202E, 0x2060...0x2064, 0x2066...0x2069, 0xFEFF: true
        case 0x00AD, 0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFFA0, 0xFFF9...0xFFFB: true
        case 0xFE00...0xFE0F, 0xE0000...0xE007F, 0xE0100...0xE01EF: true
        default: scalar & 0xFFFE == 0xFFFE
        }
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

    private static func appendEscape(_ scalar: UInt32, to bytes: inout some JSONByteSink) {
        switch scalar {
        case 0x0A: bytes.put(#"\n"#)
        case 0x0D: bytes.put(#"\r"#)
        case 0x09: bytes.put(#"\t"#)
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

    private static func appendUnit(_ unit: UInt32, to bytes: inout some JSONByteSink) {
        bytes.put(#"\u"#)
        for shift in stride(from: 12, through: 0, by: -4) {
            bytes.put(HexText.digit(UInt8(truncatingIfNeeded: unit >> UInt32(shift)) & 0x0F))
        }
    }

    /// Decimal digits of `value`.
    static func appendInteger(_ value: Int, to bytes: inout some JSONByteSink) {
        if value < 0 { bytes.put(UInt8(ascii: "-")) }
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
            bytes.put(UnsafeRawBufferPointer(rebasing: buffer[(20 - count)...]))
        }
    }

    /// The digest as 64 lower-case hexadecimal digits, written as one piece.
    static func appendHex(_ digest: SHA256Digest, to bytes: inout some JSONByteSink) {
        var hex = (SIMD32<UInt8>(), SIMD32<UInt8>())
        withUnsafeMutableBytes(of: &hex) { text in
            for index in 0..<32 {
                text[2 * index] = HexText.digit(digest.bytes[index] >> 4)
                text[2 * index + 1] = HexText.digit(digest.bytes[index] & 0x0F)
            }
            bytes.put(UnsafeRawBufferPointer(text))
        }
    }
}

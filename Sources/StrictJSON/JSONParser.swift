/// A strict RFC 8259 JSON parser. Hand-written because no available library refuses duplicate keys, keeps number
/// literals exactly, and bounds depth — the properties a security gateway needs so that it never reads a message
/// differently from the server behind it.
///
/// Refused: duplicate keys (compared after escapes are resolved), invalid UTF-8, unescaped control characters, lone
/// surrogate escapes, leading zeros, `NaN`/`Infinity`, trailing commas, comments, anything after the value, a
/// byte-order mark, and input beyond the configured depth or size. (`JSONLimits.lenient` reads repeated keys, `NaN`,
/// `Infinity` and lone surrogates as Python's `json.loads` does, for JSON that a server decodes from a string.)
public struct JSONParser {
    /// The input, borrowed for the duration of one `parse` call.
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0
    private let limits: JSONLimits
    /// Keys whose values' byte ranges are recorded (`spans`); empty: none.
    private var spanPath: [String] = []
    private var spans: [JSONSpan] = []
    /// The element of a top-level array being parsed (0 when the text is not an array).
    private var element = 0

    /// Parses one JSON text. Contiguous input (an array, a buffer's bytes) is read where it lies, without a copy.
    public static func parse(_ input: some Collection<UInt8>, limits: JSONLimits = JSONLimits()) throws(JSONParseError) -> JSONValue {
        try parse(input, limits: limits, spansAlong: []).value
    }

    /// Parses one JSON text and reports where the values along `path` lie in `input`: for `["params", "arguments"]`,
    /// the byte range of the value of `params` and of the value of `arguments` inside it, for the text itself or, when
    /// the text is an array, for each of its elements (in the order the values end: inner before outer). Keys are
    /// compared after escapes are resolved.
    public static func parse(
        _ input: some Collection<UInt8>, limits: JSONLimits = JSONLimits(), spansAlong path: [String]
    ) throws(JSONParseError) -> (value: JSONValue, spans: [JSONSpan]) {
        guard input.count <= limits.maximumBytes else {
            throw JSONParseError(reason: "input of \(input.count) bytes exceeds the limit of \(limits.maximumBytes)", offset: 0)
        }
        let parsed =
            input.withContiguousStorageIfAvailable { bytes in parseContiguous(bytes, limits: limits, path: path) }
            ?? Array(input).withUnsafeBufferPointer { bytes in parseContiguous(bytes, limits: limits, path: path) }
        return try parsed.get()
    }

    /// Parses one JSON text given as a string.
    public static func parse(_ text: String, limits: JSONLimits = JSONLimits()) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), limits: limits)
    }

    /// The parse itself, over bytes that stay valid for its duration (the parser never outlives this call).
    private static func parseContiguous(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: JSONLimits, path: [String]
    ) -> Result<(value: JSONValue, spans: [JSONSpan]), JSONParseError> {
        var parser = JSONParser(bytes: bytes, limits: limits)
        parser.spanPath = path
        return Result { () throws(JSONParseError) in
            parser.skipWhitespace()
            let value = try parser.parseValue(along: path.isEmpty ? nil : 0)
            parser.skipWhitespace()
            guard parser.index == parser.bytes.count else { throw parser.error("unexpected data after the JSON value") }
            return (value, parser.spans)
        }
    }

    private init(bytes: UnsafeBufferPointer<UInt8>, limits: JSONLimits) {
        self.bytes = bytes
        self.limits = limits
    }

    private func error(_ reason: String) -> JSONParseError { JSONParseError(reason: reason, offset: index) }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    /// `along`: how many keys of `spanPath` lead to this value (nil: it is off the path).
    private mutating func parseValue(along position: Int? = nil) throws(JSONParseError) -> JSONValue {
        guard let byte = current else { throw error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"): return .object(try parseObject(along: position))
        case UInt8(ascii: "["): return .array(try parseArray(along: position))
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-") where limits.lenient && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "I"):
            try expectWord("-Infinity")
            return .number(JSONNumber(literal: "-Infinity"))
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        case UInt8(ascii: "N") where limits.lenient: try expectWord("NaN"); return .number(JSONNumber(literal: "NaN"))
        case UInt8(ascii: "I") where limits.lenient: try expectWord("Infinity"); return .number(JSONNumber(literal: "Infinity"))
        default: throw error("unexpected character '\(Self.printable(byte))'")
        }
    }

    private mutating func expectWord(_ word: StaticString) throws(JSONParseError) {
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard bytes.count - index >= expected.count, bytes[index..<index + expected.count].elementsEqual(expected) else {
            throw error("invalid literal (expected \(word))")
        }
        index += expected.count
    }

    private mutating func enterContainer() throws(JSONParseError) {
        depth += 1
        if depth > limits.maximumDepth {
            var tooDeep = error("nesting deeper than \(limits.maximumDepth) levels")
            tooDeep.isTooDeep = true
            throw tooDeep
        }
    }

    /// Up to this many members, a new key is compared with each one before it; beyond, a set of keys is kept.
    static let keysScannedForRepeats = 12

    private mutating func parseObject(along position: Int? = nil) throws(JSONParseError) -> JSONObject {
        try enterContainer()
        index += 1
        var members: [JSONObject.Member] = []
        // Repeated keys are found by looking through the members while they are few (no set to allocate for the
        // small objects of nearly every message), and through a set once there are many.
        var seen: Set<String>?
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return JSONObject(members)
        }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyOffset = index
            let key = try parseString()
            var repeated = false
            if limits.lenient {
                // Every value of a repeated key is kept.
            } else if seen != nil {
                repeated = !seen!.insert(key).inserted
            } else {
                repeated = members.contains { $0.key == key }
                if !repeated && members.count >= Self.keysScannedForRepeats {
                    seen = Set(members.map(\.key))
                    seen!.insert(key)
                }
            }
            guard !repeated else {
                throw JSONParseError(reason: "duplicate key \"\(key)\"", offset: keyOffset)
            }
            if members.isEmpty { members.reserveCapacity(4) }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':' after a key") }
            index += 1
            skipWhitespace()
            if let position, position < spanPath.count, key == spanPath[position] {
                let start = index
                members.append(.init(key: key, value: try parseValue(along: position + 1)))
                spans.append(JSONSpan(element: element, depth: position + 1, range: start..<index))
            } else {
                members.append(.init(key: key, value: try parseValue()))
            }
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                index += 1
            case UInt8(ascii: "}"):
                index += 1
                depth -= 1
                return JSONObject(members)
            default:
                throw error("expected ',' or '}' in an object")
            }
        }
    }

    /// `along` is 0 only for a top-level array, whose elements are each followed along the span path.
    private mutating func parseArray(along position: Int? = nil) throws(JSONParseError) -> [JSONValue] {
        let followsElements = position == 0 && depth == 0
        try enterContainer()
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return elements
        }
        while true {
            skipWhitespace()
            if followsElements {
                element = elements.count
                elements.append(try parseValue(along: 0))
            } else {
                elements.append(try parseValue())
            }
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                index += 1
            case UInt8(ascii: "]"):
                index += 1
                depth -= 1
                return elements
            default:
                throw error("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONNumber {
        let start = index
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, Self.isDigit(first) else { throw error("invalid number") }
        index += 1
        if first == UInt8(ascii: "0"), let next = current, Self.isDigit(next) {
            throw error("numbers must not have leading zeros")
        }
        skipDigits()
        if current == UInt8(ascii: ".") {
            index += 1
            guard let digit = current, Self.isDigit(digit) else { throw error("expected a digit after '.'") }
            skipDigits()
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let digit = current, Self.isDigit(digit) else { throw error("expected a digit in the exponent") }
            skipDigits()
        }
        return JSONNumber(literal: String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
    }

    private mutating func skipDigits() {
        while let byte = current, Self.isDigit(byte) { index += 1 }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes, so the string is the bytes between the quotes.
        var bitsSet: UInt8 = 0
        while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\"), byte >= 0x20 {
            bitsSet |= byte
            index += 1
        }
        if current == UInt8(ascii: "\""), bitsSet < 0x80 {
            // ASCII only: valid UTF-8 as it stands (and decoded without the generic validation's runtime lookups).
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            index += 1
            return text
        }
        if current == UInt8(ascii: "\"") {
            guard let text = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self) else {
                throw JSONParseError(reason: "invalid UTF-8 in a string", offset: start)
            }
            index += 1
            try requireStreamSafe(text, at: start)
            return text
        }
        // With escapes: UTF-8 collected in one growing buffer (appending to a `String.UnicodeScalarView` one scalar at
        // a time is quadratic: 4 MiB of escapes took 37 s), and validated once at the end. An escape adds a whole
        // scalar, which begins with ASCII or a lead byte, never a continuation byte: the buffer is valid exactly when
        // every run of raw bytes between escapes is (checking each run made a `String` of it, a quarter of the time of
        // a large argument with escaped quotes).
        var utf8: [UInt8] = []
        var runStart = start
        while true {
            guard let byte = current else { throw error("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                utf8.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                index += 1
                guard let text = String(validating: utf8, as: UTF8.self) else {
                    throw JSONParseError(reason: "invalid UTF-8 in a string", offset: firstInvalidRun(from: start))
                }
                try requireStreamSafe(text, at: start)
                return text
            case UInt8(ascii: "\\"):
                utf8.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                index += 1
                let scalar = try parseEscape()
                utf8.append(contentsOf: UTF8.encode(scalar)!)
                runStart = index
            case 0x00..<0x20:
                throw error("unescaped control character in a string")
            default:
                index += 1
            }
        }
    }

    /// Refuses a string with more than `maximumCombiningRun` combining marks in a row (`JSONLimits`,
    /// `StreamSafeText`), reported at the string's first byte.
    private func requireStreamSafe(_ text: String, at offset: Int) throws(JSONParseError) {
        guard !StreamSafeText.isStreamSafe(text.unicodeScalars, maximumRun: limits.maximumCombiningRun) else { return }
        var error = JSONParseError(
            reason: "a string has more than \(limits.maximumCombiningRun) combining marks in a row (not stream-safe Unicode text)",
            offset: offset)
        error.isNotStreamSafe = true
        throw error
    }

    /// Where the first run of raw bytes that is not UTF-8 starts, in a string (from after its opening quote) already
    /// read to its end: the offset an invalid string is reported at.
    private func firstInvalidRun(from start: Int) -> Int {
        var runStart = start
        var position = start
        while position < bytes.count, bytes[position] != UInt8(ascii: "\"") {
            guard bytes[position] == UInt8(ascii: "\\") else {
                position += 1
                continue
            }
            if String(validating: UnsafeBufferPointer(rebasing: bytes[runStart..<position]), as: UTF8.self) == nil { return runStart }
            // The escape was read already: `\uXXXX` (twice for a surrogate pair) or one character.
            position += bytes[position + 1] == UInt8(ascii: "u") ? 6 : 2
            runStart = position
        }
        return runStart
    }

    private mutating func parseEscape() throws(JSONParseError) -> Unicode.Scalar {
        guard let byte = current else { throw error("unterminated escape") }
        index += 1
        switch byte {
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "/"): return "/"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            let unit = try parseHex4()
            if (0xD800...0xDBFF).contains(unit) {
                guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                    if limits.lenient { return "\u{FFFD}" }
                    throw error("lone high surrogate \\u\(String(unit, radix: 16, uppercase: true))")
                }
                index += 2
                let low = try parseHex4()
                guard (0xDC00...0xDFFF).contains(low) else {
                    if limits.lenient {
                        index -= 6  // the escape after the lone high surrogate is read on its own
                        return "\u{FFFD}"
                    }
                    throw error("high surrogate not followed by a low surrogate")
                }
                let value = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                return Unicode.Scalar(value)!
            }
            guard !(0xDC00...0xDFFF).contains(unit), let scalar = Unicode.Scalar(UInt32(unit)) else {
                if limits.lenient { return "\u{FFFD}" }
                throw error("lone low surrogate \\u\(String(unit, radix: 16, uppercase: true))")
            }
            return scalar
        default:
            throw error("invalid escape '\\\(Self.printable(byte))'")
        }
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt16 {
        guard bytes.count - index >= 4 else { throw error("truncated \\u escape") }
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard let digit = HexDigit.value(bytes[index]) else { throw error("invalid hex digit in \\u escape") }
            value = value << 4 | UInt16(digit)
            index += 1
        }
        return value
    }

    private static func printable(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? String(UnicodeScalar(byte)) : "0x" + String(byte, radix: 16)
    }
}

/// Where a value along a key path lies in the bytes a `JSONParser` read.
public struct JSONSpan: Sendable, Hashable {
    /// The element of a top-level array the path was followed in (0 when the text is not an array).
    public let element: Int
    /// How many keys of the path lead to the value (1: the value of the first key).
    public let depth: Int
    /// The value's bytes, as offsets into the input.
    public let range: Range<Int>
}

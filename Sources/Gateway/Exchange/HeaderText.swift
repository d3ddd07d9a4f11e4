import NIOCore
import NIOHTTP1

/// HTTP header names and values compared byte by byte, ignoring ASCII case, without building lower-cased copies:
/// these comparisons run for every header of every request and response.
enum HeaderText {
    /// Whether header name `name` is `lowercaseName` (given in lower case).
    static func isName(_ name: String, _ lowercaseName: String) -> Bool {
        name.utf8.count == lowercaseName.utf8.count && hasPrefix(name, lowercaseName)
    }

    /// Whether `text` starts with `lowercasePrefix` (given in lower case): `Content-Type: Application/JSON; charset=utf-8`
    /// starts with `application/json`.
    static func hasPrefix(_ text: String, _ lowercasePrefix: String) -> Bool {
        guard text.utf8.count >= lowercasePrefix.utf8.count else { return false }
        // Over contiguous UTF-8 (native and literal strings, small ones included), index by index; the iterator-based
        // comparison (for bridged or foreign strings only) is several times slower.
        let compared = text.utf8.withContiguousStorageIfAvailable { text in
            lowercasePrefix.utf8.withContiguousStorageIfAvailable { prefix in
                for index in 0..<prefix.count where lowercased(text[index]) != prefix[index] { return false }
                return true
            }
        }
        if let compared = compared ?? nil { return compared }
        return zip(text.utf8, lowercasePrefix.utf8).allSatisfy { pair in lowercased(pair.0) == pair.1 }
    }

    /// Whether `value` is a valid `Host` (RFC 9112 §3.2, RFC 3986 §3.2.2): a registered name, an IPv4 address or a
    /// bracketed IP literal, and an optional port; empty is valid. Checked as bytes: unreserved and sub-delimiter
    /// characters, `%`, `:`, `[` and `]` only (a blank, `,`, `/`, `@` or a control byte makes it invalid: a comma,
    /// though RFC 3986 allows it in a name, is how a list of hosts would be sent, and no DNS name holds one).
    static func isValidHost(_ value: String) -> Bool {
        value.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                true
            default: "-._~%!$&'()*+;=:[]".utf8.contains(byte)
            }
        }
    }

    /// The origin form (`/path?query`) of an absolute-form request target (`http://host/path?query`, RFC 9112 §3.2.2),
    /// which a server must accept; nil when `target` is not in absolute form.
    static func originForm(ofAbsolute target: String) -> String? {
        let rest: Substring
        if hasPrefix(target, "http://") {
            rest = target.dropFirst(7)
        } else if hasPrefix(target, "https://") {
            rest = target.dropFirst(8)
        } else {
            return nil
        }
        guard let start = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
        let path = rest[start...]
        return path.hasPrefix("?") ? "/" + path : String(path)
    }

    /// Whether `text` can go into a header line: no control byte but HTAB. CR, LF and NUL would end or cut the line
    /// (header injection); the others are not allowed in a field value (RFC 9110 §5.5), and peers refuse them or read
    /// them each their own way.
    static func fitsOnOneLine(_ text: String) -> Bool {
        let fits = text.utf8.withContiguousStorageIfAvailable { bytes in
            for byte in bytes where isControl(byte) { return false }
            return true
        }
        return fits ?? !text.utf8.contains(where: isControl)
    }

    /// Whether `text` holds U+FFFD (EF BF BD in UTF-8), the character a decoder puts in place of bytes that are not
    /// UTF-8.
    static func holdsReplacementCharacter(_ text: String) -> Bool {
        let found = text.utf8.withContiguousStorageIfAvailable { bytes in
            var index = 0
            while index + 2 < bytes.count {
                if bytes[index] == 0xEF, bytes[index + 1] == 0xBF, bytes[index + 2] == 0xBD { return true }
                index += 1
            }
            return false
        }
        return found ?? text.unicodeScalars.contains("\u{FFFD}")
    }

    /// Whether `byte` is a control byte a field value may not hold: 0x00–0x1F but HTAB, and DEL.
    @inline(__always)
    static func isControl(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != 0x09) || byte == 0x7F
    }

    /// Writes the header line `name: value` and its CRLF as one write into `buffer` (a write per piece checks the
    /// buffer's capacity and uniqueness four times): this runs for every header the gateway sends either way. The two
    /// are written as they are; the caller checks them first (`fitsOnOneLine`).
    static func writeField(_ name: String, _ value: String, into buffer: inout ByteBuffer) {
        let written =
            name.utf8.withContiguousStorageIfAvailable { name in
                value.utf8.withContiguousStorageIfAvailable { value in
                    let total = name.count + value.count + 4
                    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: total) { out in
                        var at = 0
                        func put(_ bytes: UnsafeRawBufferPointer) {
                            UnsafeMutableRawBufferPointer(rebasing: out[at..<at + bytes.count]).copyMemory(from: bytes)
                            at += bytes.count
                        }
                        put(UnsafeRawBufferPointer(name))
                        out[at] = UInt8(ascii: ":")
                        out[at + 1] = UInt8(ascii: " ")
                        at += 2
                        put(UnsafeRawBufferPointer(value))
                        out[at] = UInt8(ascii: "\r")
                        out[at + 1] = UInt8(ascii: "\n")
                        return total
                    }
                    return true
                } ?? false
            } ?? false
        if written { return }
        // A bridged or foreign string (none the gateway makes): piece by piece.
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        buffer.writeString(value)
        buffer.writeStaticString("\r\n")
    }

    /// Writes `major.minor` of an HTTP version (a single digit each, as every version in use has).
    static func write(_ version: HTTPVersion, into buffer: inout ByteBuffer) {
        func write(_ number: Int, into buffer: inout ByteBuffer) {
            if (0...9).contains(number) {
                buffer.writeInteger(UInt8(ascii: "0") + UInt8(number))
            } else {
                buffer.writeString(String(number))
            }
        }
        write(version.major, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "."))
        write(version.minor, into: &buffer)
    }

    /// `byte` in lower case when it is an ASCII capital letter.
    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    /// The directives of a comma-separated header (`Cache-Control: public, max-age=600`, `Keep-Alive: timeout=5,
    /// max=100`), in order: each name in lower case, with its value when it has one (after `=`), blanks around both
    /// and quotes around the value removed.
    static func directives(_ headers: HTTPHeaders, _ header: String) -> [(name: String, value: Substring?)] {
        headers[canonicalForm: header].map { directive in
            let parts = directive.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            var value = parts.count == 2 ? trimmedBlanks(parts[1]) : nil
            if let quoted = value, quoted.count >= 2, quoted.first == "\"", quoted.last == "\"" {
                value = quoted.dropFirst().dropLast()
            }
            return (trimmedBlanks(parts[0]).lowercased(), value)
        }
    }

    /// The header names the `Connection` headers of `headers` nominate as options of this connection only (RFC 9110
    /// §7.6.1), lower-cased: every token but `close` and `keep-alive`. A proxy removes the fields they name before
    /// forwarding.
    static func connectionOptions(_ headers: HTTPHeaders) -> [String] {
        directives(headers, "connection").map(\.name).filter { !$0.isEmpty && $0 != "close" && $0 != "keep-alive" }
    }

    /// Whether a `Connection` value may name a header: anything but a bare `keep-alive` or `close` (what nearly every
    /// peer sends, told without making a string).
    static func namesOptions(_ value: String) -> Bool { !(isName(value, "keep-alive") || isName(value, "close")) }

    /// `text` without the blanks (spaces, tabs) around it.
    private static func trimmedBlanks(_ text: Substring) -> Substring {
        let isBlank = { (character: Character) in character == " " || character == "\t" }
        guard let start = text.firstIndex(where: { !isBlank($0) }), let end = text.lastIndex(where: { !isBlank($0) }) else {
            return ""
        }
        return text[start...end]
    }
}

/// A fixed list of lower-case header names, looked up by a header's name ignoring ASCII case. A name is compared
/// only with the listed names of its own length (in the lists the gateway keeps at most two names share a length,
/// so a lookup is at most two comparisons): this runs for every header of every request and response. The names are
/// kept as one run of bytes, and the candidates of each length as plain integers, so a lookup copies no string or
/// array (each copy of one is a reference-count operation).
struct HeaderNames: Sendable {
    /// The names, in the order given.
    let names: [String]
    /// The names' bytes, one after the other.
    private let bytes: [UInt8]
    /// Where each name starts in `bytes`.
    private let starts: [Int]
    /// For each length, where its names' positions start in `candidates`; one more entry ends the last.
    private let firstCandidate: [Int]
    /// Positions in `names`, grouped by length.
    private let candidates: [Int]

    /// A list of `names`, given in lower case.
    init(_ names: [String]) {
        self.names = names
        var starts: [Int] = []
        var bytes: [UInt8] = []
        for name in names {
            starts.append(bytes.count)
            bytes += name.utf8
        }
        let longest = names.map(\.utf8.count).max() ?? 0
        var candidates: [Int] = []
        var firstCandidate: [Int] = []
        for length in 0...longest {
            firstCandidate.append(candidates.count)
            candidates += names.indices.filter { names[$0].utf8.count == length }
        }
        firstCandidate.append(candidates.count)
        (self.bytes, self.starts, self.firstCandidate, self.candidates) = (bytes, starts, firstCandidate, candidates)
    }

    /// The position in `names` of header name `name` (any case); nil when it is not listed.
    func index(of name: String) -> Int? {
        name.utf8.withContiguousStorageIfAvailable { index(of: UnsafeRawBufferPointer($0)) }
            ?? names.indices.first { HeaderText.isName(name, names[$0]) }
    }

    /// The position in `names` of the header name whose bytes are `name` (any case); nil when it is not listed.
    func index(of name: UnsafeRawBufferPointer) -> Int? {
        let length = name.count
        guard length + 1 < firstCandidate.count else { return nil }
        var position = firstCandidate[length]
        while position < firstCandidate[length + 1] {
            let candidate = candidates[position]
            let start = starts[candidate]
            let equal = bytes.withUnsafeBufferPointer { listed in
                for offset in 0..<length where HeaderText.lowercased(name[offset]) != listed[start + offset] { return false }
                return true
            }
            if equal { return candidate }
            position += 1
        }
        return nil
    }
}

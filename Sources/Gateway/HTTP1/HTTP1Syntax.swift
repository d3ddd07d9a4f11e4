import NIOCore
import NIOHTTP1
import StrictJSON

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why bytes could not be framed as an HTTP/1.1 message. The description says what was wrong.
enum HTTPFramingError: Error, Equatable, CustomStringConvertible {
    /// The bytes break HTTP/1.1's syntax or framing rules.
    case invalid(String)
    /// A head (or a chunk-size line, or a trailer section) grew past the bound without ending.
    case tooLarge(Int)

    /// What was wrong.
    var description: String {
        switch self {
        case .invalid(let why): why
        case .tooLarge(let bound): "more than \(bound) bytes without the end of a head or line"
        }
    }
}

/// The syntax both directions of HTTP/1.1 share (RFC 9112): the end of a head, field lines, chunked bodies. The
/// request and response framings (`RequestFraming`, `ResponseFraming`) build on it. Byte-level and strict: CRLF line
/// ends only, no line folding, no blank before a field's colon, no control characters in names or values.
enum HTTP1Syntax {
    /// The most bytes of a chunk-size line (with its extensions) or of a whole trailer section.
    static let lineBound = 16 * 1024

    /// The offset just past the empty line that ends a head (or a trailer section) in `input`, looking from `from`;
    /// nil when it has not arrived. A LF without its CR is an error at once (a peer that ends lines so would
    /// otherwise wait for a deadline). Beyond `bound` bytes without an end: `tooLarge`.
    static func headEnd(in input: ByteBuffer, from: Int, startsWithLine: Bool, bound: Int) throws -> Int? {
        let found: Int? = try input.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress else { return nil }
            var index = from
            while index < bytes.count {
                // The next LF, found by the C library's vectorised search.
                guard let newline = memchr(base + index, 0x0A, bytes.count - index) else { return nil }
                index = base.distance(to: UnsafeRawPointer(newline))
                guard index > 0, bytes[index - 1] == 0x0D else { throw HTTPFramingError.invalid("a line ends in LF without CR") }
                // An empty line: CRLF at the start (a trailer section without fields), or right after another CRLF.
                if index == 1 && !startsWithLine { return 2 }
                if index >= 3, bytes[index - 2] == 0x0A, bytes[index - 3] == 0x0D { return index + 1 }
                index += 1
            }
            return nil
        }
        if let found {
            guard found <= bound else { throw HTTPFramingError.tooLarge(bound) }
            return found
        }
        if input.readableBytes > bound { throw HTTPFramingError.tooLarge(bound) }
        return nil
    }

    /// `HTTP/1.1` or `HTTP/1.0` (8 bytes), the only versions spoken.
    static func version(_ bytes: UnsafeRawBufferPointer) -> HTTPVersion? {
        if bytes.elementsEqual("HTTP/1.1".utf8) { return .http1_1 }
        if bytes.elementsEqual("HTTP/1.0".utf8) { return .http1_0 }
        return nil
    }

    /// What the fields of a head say about framing, gathered as they are read, and the fields themselves.
    struct Fields {
        var headers: [(String, String)] = []
        /// Field lines read so far (kept or not).
        var lines = 0
        var contentLength: Int?
        var chunked = false
        var upgrade = false
        /// What the `Connection` fields say about reusing the connection.
        var connection = ConnectionReuse.unstated
        /// The only names kept, when not all are: the others are checked and read for framing, and no string is
        /// made of them.
        let keptNames: HeaderNames?

        /// Fields to be kept (`keep`) or only checked; with `keptNames`, only the fields of those names are kept.
        init(keep: Bool, keptNames: HeaderNames? = nil) {
            self.keptNames = keptNames
            if keep { headers.reserveCapacity(keptNames == nil ? 16 : 8) }
        }
    }

    /// The most field lines a request head may have (haproxy allows about a hundred). Their fields are all kept, while
    /// trailers are read and dropped.
    static let maximumRequestFieldLines = 128

    /// The most field lines an upstream's answer head may have (`502` beyond). Generous (answers carry a dozen or
    /// so), but bounded: within the 1 MiB head bound a hostile upstream could send 130,000 lines, and the headers the
    /// gateway keeps become strings (found by review).
    static let maximumResponseFieldLines = 1_024

    /// Field lines up to the empty line that ends them (`bytes` ends with it; every LF in it has its CR), each
    /// checked; kept in `fields` if `keep` (and named in its `keptNames`, if any), framing headers read either way.
    /// Values lose their leading and trailing blanks (RFC 9110, 5.5).
    /// At most `maximumLines` field lines (refused beyond: `400` for a request, `502` for an answer).
    static func readFields(
        _ bytes: UnsafeRawBufferPointer, into fields: inout Fields, keep: Bool, maximumLines: Int = .max
    ) throws {
        var index = 0
        while index < bytes.count {
            if bytes[index] == 0x0D {
                // The empty line, which ends `bytes`. A CR anywhere else at a line's start is a bare CR, refused
                // (RFC 9112 2.2): read as a line end it would end the fields early and hide the ones after it.
                guard index + 2 == bytes.count, bytes[index + 1] == 0x0A else {
                    throw HTTPFramingError.invalid("a CR without LF at the start of a header line")
                }
                return
            }
            let nameStart = index
            while index < bytes.count, isTokenByte(bytes[index]) { index += 1 }
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                if index == nameStart, bytes[index] == 0x20 || bytes[index] == 0x09 {
                    throw HTTPFramingError.invalid("a header line starts with whitespace (obsolete line folding)")
                }
                throw HTTPFramingError.invalid("a header name holds a character that is not allowed, or has no colon")
            }
            guard index > nameStart else { throw HTTPFramingError.invalid("a header line has an empty name") }
            // Found by review: 15,000 one-letter fields fit the head's byte bound, and became 15,000 string pairs
            // (570 KB held per connection, for as long as its request lasted).
            fields.lines += 1
            guard fields.lines <= maximumLines else { throw HTTPFramingError.invalid("more than \(maximumLines) header fields") }
            let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<index])
            index += 1
            while bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
            let valueStart = index
            // The value runs to the line's CR (`bytes` ends with the empty line's, so there is one). A CR not
            // followed by LF is a control character.
            index = bytes.baseAddress!.distance(to: UnsafeRawPointer(memchr(bytes.baseAddress! + index, 0x0D, bytes.count - index)!))
            guard bytes[index + 1] == 0x0A, !holdsControlCharacter(UnsafeRawBufferPointer(rebasing: bytes[valueStart..<index])) else {
                throw HTTPFramingError.invalid("a header value holds a control character")
            }
            var valueEnd = index
            while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd])
            index += 2
            try frameField(name, value, &fields)
            if keep, fields.keptNames.map({ $0.index(of: name) != nil }) ?? true {
                // Kept values become strings the gateway compares and splits; a long run of combining marks would make
                // each comparison quadratic (an `Authorization` value of 40,000 marks cost seconds of the event loop
                // before any credential was checked; an upstream's `Connection` value, minutes: found by review).
                // Values only read as bytes (framing headers, an answer's headers not kept, trailers) are not held to it.
                guard StreamSafeText.isStreamSafe(utf8: value) else {
                    throw HTTPFramingError.invalid(
                        "a header value has more than \(StreamSafeText.maximumCombiningRun) combining marks in a row (not stream-safe Unicode text)"
                    )
                }
                fields.headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            }
        }
    }

    /// Reads the headers that decide framing: one way to frame a body (never `Content-Length` and
    /// `Transfer-Encoding` together, neither repeated), and no transfer coding but `chunked`.
    private static func frameField(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, _ fields: inout Fields) throws {
        if equalsIgnoringCase(name, "content-length") {
            guard fields.contentLength == nil else { throw HTTPFramingError.invalid("more than one Content-Length") }
            guard !fields.chunked else { throw HTTPFramingError.invalid("both Content-Length and Transfer-Encoding") }
            guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw HTTPFramingError.invalid("Content-Length is not a number")
            }
            fields.contentLength = value.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        } else if equalsIgnoringCase(name, "transfer-encoding") {
            guard fields.contentLength == nil else { throw HTTPFramingError.invalid("both Content-Length and Transfer-Encoding") }
            guard !fields.chunked else { throw HTTPFramingError.invalid("more than one Transfer-Encoding") }
            guard equalsIgnoringCase(value, "chunked") else { throw HTTPFramingError.invalid("Transfer-Encoding other than chunked") }
            fields.chunked = true
        } else if equalsIgnoringCase(name, "connection") {
            fields.connection.read(value)
        } else if equalsIgnoringCase(name, "upgrade") {
            fields.upgrade = true
        }
    }

    /// Whether `bytes` hold a control character other than HTAB (below 0x20, or DEL): eight bytes at a time, a
    /// byte at a time only for words that may hold one. Header values are most of a head's bytes (a bearer token).
    static func holdsControlCharacter(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        var index = 0
        while index < bytes.count {
            if bytes.count - index >= 8 {
                let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                // A high bit for each byte below 0x20 and each byte equal to 0x7F (a borrow may also flag a byte
                // above a flagged one: such a word is checked byte by byte below, as any flagged word is).
                let below = (word &- ones &* 0x20) & ~word & highs
                let delete = word ^ (ones &* 0x7F)
                if (below | ((delete &- ones) & ~delete & highs)) == 0 {
                    index += 8
                    continue
                }
            }
            for byte in bytes[index..<min(index + 8, bytes.count)] where HeaderText.isControl(byte) {
                return true
            }
            index += 8
        }
        return false
    }

    /// `tchar` (RFC 9110): the characters of methods and header names.
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        // One bit per ASCII character: bytes 0-63, then 64-127 (`tokenCharacters` spells them out; a test checks
        // the two agree).
        let bits: UInt64 = byte < 64 ? 0x03FF_6CFA_0000_0000 : 0x57FF_FFFF_C7FF_FFFE
        return byte < 128 && (bits >> UInt64(byte & 63)) & 1 == 1
    }

    /// The characters of `tchar`, as RFC 9110 lists them.
    static let tokenCharacters = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

    /// Whether `bytes` spell `lowercase` in any case (ASCII letters; other bytes exactly).
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for index in 0..<bytes.count {
            let byte = bytes[index]
            let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
            if folded != expected[index] { return false }
        }
        return true
    }
}

/// What a message's `Connection` options say about reusing its connection (RFC 9112 §9.3), read as NIO's
/// `isKeepAlive` reads them: `close` closes; `keep-alive` keeps the connection open when it is the only option named,
/// and a second one closes it; with neither, HTTP/1.1 keeps it open and HTTP/1.0 does not. Read byte by byte from
/// each value (NIO's version built arrays of lower-cased copies, three times for every request).
enum ConnectionReuse: Equatable {
    /// Neither option was named.
    case unstated
    /// The connection closes after this message.
    case close
    /// The connection stays open (HTTP/1.0's way of asking).
    case keepAlive

    /// Takes in the comma-separated options of one `Connection` value.
    mutating func read(_ value: UnsafeRawBufferPointer) {
        var start = 0
        while start <= value.count {
            var end = start
            while end < value.count && value[end] != UInt8(ascii: ",") { end += 1 }
            var (low, high) = (start, end)
            while low < high && (value[low] == 0x20 || value[low] == 0x09) { low += 1 }
            while high > low && (value[high - 1] == 0x20 || value[high - 1] == 0x09) { high -= 1 }
            let option = UnsafeRawBufferPointer(rebasing: value[low..<high])
            if HTTP1Syntax.equalsIgnoringCase(option, "close") {
                self = .close
            } else if HTTP1Syntax.equalsIgnoringCase(option, "keep-alive") {
                self = self == .unstated ? .keepAlive : .close
            }
            start = end + 1
        }
    }

    /// Whether a message of `version` with these options leaves its connection open for another.
    func keepsAlive(_ version: HTTPVersion) -> Bool {
        switch self {
        case .close: false
        case .keepAlive: true
        case .unstated: version.major == 1 && version.minor >= 1
        }
    }
}

/// Bytes read and not framed yet (part of a head, a chunk-size line or trailers), held between reads.
struct UnframedBytes {
    private var held: ByteBuffer?

    /// The bytes held, followed by `bytes` (just `bytes` when none are held, without a copy).
    mutating func joined(with bytes: ByteBuffer) -> ByteBuffer {
        guard var held = held.take() else { return bytes }
        var bytes = bytes
        held.writeBuffer(&bytes)
        return held
    }

    /// Holds what `input` has left unread (its read part given back once it grows large).
    mutating func hold(_ input: ByteBuffer) {
        guard input.readableBytes > 0 else { return }
        var input = input
        if input.readerIndex > 4096 { input.discardReadBytes() }
        held = input
    }

    /// Whether any bytes are held.
    var isEmpty: Bool { (held?.readableBytes ?? 0) == 0 }
}

/// A message body's framing, read from the bytes after its head: a length, chunked (RFC 9112, 7.1), or up to the
/// connection's close. Body bytes are handed out as slices of the bytes read (no copy).
struct BodyFraming {
    /// How the body is delimited.
    enum Kind {
        case length(Int)
        case chunked
        case untilClose
    }

    private enum State {
        case length(remaining: Int)
        /// Reading a chunk-size line; `scanned` bytes of it looked at already.
        case chunkSize(scanned: Int)
        case chunkData(remaining: Int)
        /// The CRLF after a chunk's data.
        case chunkDataEnd
        /// The trailer section after the last chunk; `scanned` bytes of it looked at already.
        case trailers(scanned: Int)
        case untilClose
    }

    private var state: State
    /// Bytes of chunk-size lines past their size, over the whole body: extensions carry nothing the gateway uses, and
    /// without a bound a body of a few bytes could take gigabytes on the wire (and hold its exchange as long), each
    /// line within its own bound (found by review: 39 MB sent for 2,449 body bytes).
    private var extensionBytes = 0
    /// The most `extensionBytes` a body may have.
    static let maximumExtensionBytes = HTTP1Syntax.lineBound

    /// The framing of a body delimited as `kind` says.
    init(_ kind: Kind) {
        switch kind {
        case .length(let length): state = .length(remaining: length)
        case .chunked: state = .chunkSize(scanned: 0)
        case .untilClose: state = .untilClose
        }
    }

    /// Hands the body bytes `input` holds to `emit`; true once the body has ended (the bytes after it left in
    /// `input`). A body read until the close never ends here.
    mutating func read(_ input: inout ByteBuffer, _ emit: (ByteBuffer) -> Void) throws -> Bool {
        while true {
            switch state {
            case .length(let remaining), .chunkData(let remaining):
                if remaining == 0, case .length = state { return true }
                guard input.readableBytes > 0 else { return false }
                let count = min(remaining, input.readableBytes)
                emit(input.readSlice(length: count)!)
                if count < remaining {
                    if case .length = state {
                        state = .length(remaining: remaining - count)
                    } else {
                        state = .chunkData(remaining: remaining - count)
                    }
                } else if case .length = state {
                    state = .length(remaining: 0)
                    return true
                } else {
                    state = .chunkDataEnd
                }
            case .untilClose:
                if input.readableBytes > 0 { emit(input.readSlice(length: input.readableBytes)!) }
                return false
            case .chunkDataEnd:
                guard input.readableBytes >= 2 else { return false }
                guard input.readInteger(as: UInt16.self) == 0x0D0A else {
                    throw HTTPFramingError.invalid("chunk data not followed by CRLF")
                }
                state = .chunkSize(scanned: 0)
            case .chunkSize(let scanned):
                guard let line = try Self.readLine(&input, from: scanned) else {
                    state = .chunkSize(scanned: input.readableBytes)
                    return false
                }
                let size = try Self.chunkSize(line)
                // A size line is at most 16 hexadecimal digits (`chunkSize`); the rest is extensions.
                extensionBytes += max(0, line.readableBytes - 16)
                guard extensionBytes <= Self.maximumExtensionBytes else {
                    throw HTTPFramingError.invalid("chunk extensions longer than \(Self.maximumExtensionBytes) bytes in one body")
                }
                state = size == 0 ? .trailers(scanned: 0) : .chunkData(remaining: size)
            case .trailers(let scanned):
                guard let end = try HTTP1Syntax.headEnd(in: input, from: scanned, startsWithLine: false, bound: HTTP1Syntax.lineBound)
                else {
                    state = .trailers(scanned: max(0, input.readableBytes - 3))
                    return false
                }
                // Trailer fields are checked as header fields, then dropped: the gateway relays none.
                try input.withUnsafeReadableBytes { bytes in
                    var fields = HTTP1Syntax.Fields(keep: false)
                    try HTTP1Syntax.readFields(UnsafeRawBufferPointer(rebasing: bytes[..<end]), into: &fields, keep: false)
                }
                input.moveReaderIndex(forwardBy: end)
                state = .length(remaining: 0)
                return true
            }
        }
    }

    /// Whether the body is read up to the connection's close (then the close ends it).
    var endsAtClose: Bool {
        if case .untilClose = state { return true }
        return false
    }

    /// A line ending in CRLF (without it), if whole; the first `from` bytes are known to hold no LF.
    private static func readLine(_ input: inout ByteBuffer, from: Int) throws -> ByteBuffer? {
        let found = input.withUnsafeReadableBytes { bytes in bytes[from...].firstIndex(of: UInt8(ascii: "\n")) }
        guard let newline = found else {
            if input.readableBytes > HTTP1Syntax.lineBound { throw HTTPFramingError.tooLarge(HTTP1Syntax.lineBound) }
            return nil
        }
        // The bound holds however the line was read: whole in one read, or in pieces.
        guard newline <= HTTP1Syntax.lineBound else { throw HTTPFramingError.tooLarge(HTTP1Syntax.lineBound) }
        guard newline > 0, input.getInteger(at: input.readerIndex + newline - 1, as: UInt8.self) == 0x0D else {
            throw HTTPFramingError.invalid("a line ends in LF without CR")
        }
        let line = input.getSlice(at: input.readerIndex, length: newline - 1)!
        input.moveReaderIndex(forwardBy: newline + 1)
        return line
    }

    /// `chunk-size [ chunk-ext ]`: the size, in hexadecimal; extensions are checked for stray bytes and ignored.
    private static func chunkSize(_ line: ByteBuffer) throws -> Int {
        try line.withUnsafeReadableBytes { bytes in
            var size = 0
            var index = 0
            while index < bytes.count, let digit = hexValue(bytes[index]) {
                guard size >> 59 == 0 else { throw HTTPFramingError.invalid("chunk size too large") }
                size = size << 4 | digit
                index += 1
            }
            guard index > 0 else { throw HTTPFramingError.invalid("chunk size is not hexadecimal") }
            let digitsEnd = index
            while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
            // Blanks may come before an extension's `;` only (RFC 9112 7.1.1), never at the end of the line.
            guard index < bytes.count || index == digitsEnd else { throw HTTPFramingError.invalid("blanks after a chunk size") }
            if index < bytes.count {
                guard bytes[index] == UInt8(ascii: ";") else { throw HTTPFramingError.invalid("chunk size is not hexadecimal") }
                for byte in bytes[index...] where HeaderText.isControl(byte) {
                    throw HTTPFramingError.invalid("control character in a chunk extension")
                }
            }
            return size
        }
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}

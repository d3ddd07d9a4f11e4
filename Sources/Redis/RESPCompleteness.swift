import NIOCore

/// Whether the bytes received so far hold a whole RESP value, found by looking at each byte once: the look resumes
/// where the last one stopped. (Parsing the buffer from the value's first byte on every read was quadratic in a
/// reply's lines: a 60 KB reply of 15,000 integers arriving four bytes at a time was parsed 7,700 times over, found by
/// review.) The parser then reads the value once, with its bounds; a header this look cannot read (an unknown type,
/// a count out of bounds, a line longer than a parser's bound) answers "whole" too, so that the parser reports it.
struct RESPCompleteness {
    /// Bytes from the value's first byte known to hold whole elements.
    private var scanned = 0
    /// Elements still to come before the value is whole.
    private var outstanding = 1
    private let parser: RESPParser

    init(parser: RESPParser) { self.parser = parser }

    /// Whether `bytes`, starting at the value's first byte, hold the whole value (or a header only the parser can
    /// judge).
    mutating func isWhole(_ bytes: ByteBufferView) -> Bool {
        while outstanding > 0 {
            let start = bytes.startIndex + scanned
            guard let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                return bytes.endIndex - start > parser.maximumLineBytes
            }
            guard newline - start >= 2, bytes[newline - 1] == UInt8(ascii: "\r") else { return true }
            let digits = bytes[(start + 1)..<(newline - 1)]
            var next = newline + 1
            switch bytes[start] {
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"):
                outstanding -= 1
            case UInt8(ascii: "$"):
                guard let length = Self.number(digits), length >= -1, length <= parser.maximumBulkBytes else { return true }
                if length >= 0 {
                    guard bytes.endIndex - next >= length + 2 else { return false }
                    next += length + 2
                }
                outstanding -= 1
            case UInt8(ascii: "*"):
                guard let count = Self.number(digits), count >= -1, count <= parser.maximumElements else { return true }
                outstanding += max(0, count) - 1
            default:
                return true
            }
            scanned = next - bytes.startIndex
        }
        return true
    }

    /// The value was read: the next one starts at the reader's index.
    mutating func reset() { (scanned, outstanding) = (0, 1) }

    /// A count or length of at most 18 digits (with a sign), or nil.
    private static func number(_ digits: ByteBufferView.SubSequence) -> Int? {
        var rest = digits[...]
        let negative = rest.first == UInt8(ascii: "-")
        if negative { rest = rest.dropFirst() }
        guard !rest.isEmpty, rest.count <= 18 else { return nil }
        var value = 0
        for byte in rest {
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return negative ? -value : value
    }
}

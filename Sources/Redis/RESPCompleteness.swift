import NIOCore

/// Whether the bytes received so far hold a whole RESP value, found by looking at each byte once: the look resumes
/// where the last one stopped. (Parsing the buffer from the value's first byte on every read was quadratic in a
/// reply's lines: a 60 KB reply of 15,000 integers arriving four bytes at a time was parsed 7,700 times over, found by
/// review.) The parser then reads the value once. The look holds the bytes to the parser's rules and bounds as it
/// goes; bytes that break one answer "whole" at once, so that the parser reports them (rather than the reply waiting
/// for its command's deadline).
struct RESPCompleteness {
    /// Bytes from the value's first byte known to hold whole elements.
    private var scanned = 0
    /// Elements still to come in each array begun and not ended, outermost first; the value itself is one element.
    private var remaining = [1]
    private let parser: RESPParser

    init(parser: RESPParser) { self.parser = parser }

    /// Whether `bytes`, starting at the value's first byte, hold the whole value, or bytes the parser refuses.
    mutating func isWhole(_ bytes: ByteBufferView) -> Bool {
        while !remaining.isEmpty {
            let start = bytes.startIndex + scanned
            guard let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                return bytes.endIndex - start > parser.maximumLineBytes
            }
            guard newline - start <= parser.maximumLineBytes, newline - start >= 2, bytes[newline - 1] == UInt8(ascii: "\r")
            else { return true }
            let digits = bytes[(start + 1)..<(newline - 1)]
            var next = newline + 1
            switch bytes[start] {
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                break
            case UInt8(ascii: ":"):
                guard Self.number(digits) != nil else { return true }
            case UInt8(ascii: "$"):
                guard let length = Self.number(digits), length >= -1, length <= parser.maximumBulkBytes else { return true }
                if length >= 0 {
                    let end = next + Int(length)
                    guard bytes.endIndex - end >= 2 else { return false }
                    guard bytes[end] == UInt8(ascii: "\r"), bytes[end + 1] == UInt8(ascii: "\n") else { return true }
                    next = end + 2
                }
            case UInt8(ascii: "*"):
                guard let count = Self.number(digits), count >= -1, count <= parser.maximumElements else { return true }
                if count > 0 {
                    // An array at the parser's depth bound is refused by it.
                    guard remaining.count - 1 < parser.maximumDepth else { return true }
                    remaining[remaining.count - 1] -= 1
                    remaining.append(Int(count))
                    scanned = next - bytes.startIndex
                    continue
                }
            default:
                return true
            }
            scanned = next - bytes.startIndex
            // One element ends, and with it every array it was the last element of.
            remaining[remaining.count - 1] -= 1
            while let last = remaining.last, last == 0 { remaining.removeLast() }
        }
        return true
    }

    /// The value was read: the next one starts at the reader's index.
    mutating func reset() { (scanned, remaining) = (0, [1]) }

    /// The number on a line, read as the parser reads it (at most 20 characters, an `Int64`).
    private static func number(_ digits: ByteBufferView.SubSequence) -> Int64? {
        guard digits.count <= 20 else { return nil }
        return Int64(String(decoding: digits, as: UTF8.self))
    }
}

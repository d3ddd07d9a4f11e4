public import NIOCore

/// A value of the Redis serialization protocol (RESP2, which every Redis since 2.0 speaks and RESP3 servers speak
/// until `HELLO 3`): what a command's reply is made of.
public enum RESPValue: Sendable, Hashable {
    /// `+OK`: a short status text.
    case simpleString(String)
    /// `-ERR …`: the server refused the command; the text starts with an error kind such as `NOSCRIPT`.
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$5 hello`: bytes; nil for the null bulk string `$-1`.
    case bulkString([UInt8]?)
    /// `*2 …`: nested values; nil for the null array `*-1`.
    case array([RESPValue]?)

    /// The text of a simple or bulk string.
    public var text: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    /// The value as an integer: an integer reply, or a string of decimal digits.
    public var integer: Int64? {
        switch self {
        case .integer(let value): value
        default: text.flatMap { Int64($0) }
        }
    }

    /// The error text of an error reply.
    public var errorText: String? {
        if case .error(let text) = self { return text }
        return nil
    }

    /// Writes a command as RESP clients must send it: an array of bulk strings.
    public static func writeCommand(_ arguments: [[UInt8]], into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        buffer.writeString(String(arguments.count))
        buffer.writeStaticString("\r\n")
        for argument in arguments {
            buffer.writeStaticString("$")
            buffer.writeString(String(argument.count))
            buffer.writeStaticString("\r\n")
            buffer.writeBytes(argument)
            buffer.writeStaticString("\r\n")
        }
    }
}

/// A reply that is not RESP, or larger than the client accepts: the connection cannot be trusted any further.
public struct RESPProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was wrong.
    public let reason: String
    public var description: String { "Redis protocol error: \(reason)" }
}

/// Reads RESP values from a byte stream, one complete value at a time, within bounds: a server (or whatever answers
/// on its port) cannot make the gateway allocate more than `maximumBulkBytes` per string or nest without end.
public struct RESPParser: Sendable {
    /// Largest bulk string accepted.
    public var maximumBulkBytes: Int
    /// Most elements in one array.
    public var maximumElements: Int
    /// Deepest nesting of arrays.
    public var maximumDepth: Int
    /// Longest simple string, error or integer line.
    public var maximumLineBytes: Int

    /// A parser with bounds fit for small command replies.
    public init(maximumBulkBytes: Int = 1 << 20, maximumElements: Int = 1024, maximumDepth: Int = 8, maximumLineBytes: Int = 4096) {
        self.maximumBulkBytes = maximumBulkBytes
        self.maximumElements = maximumElements
        self.maximumDepth = maximumDepth
        self.maximumLineBytes = maximumLineBytes
    }

    /// The next complete value at the front of `buffer`, consuming its bytes; nil (consuming nothing) while it is
    /// incomplete. Throws when the bytes are not RESP or exceed a bound.
    public func next(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> RESPValue? {
        var view = buffer
        guard let value = try parse(&view, depth: 0) else { return nil }
        buffer = view
        return value
    }

    private func parse(_ buffer: inout ByteBuffer, depth: Int) throws(RESPProtocolError) -> RESPValue? {
        guard let kind = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        guard let line = try line(&buffer) else { return nil }
        switch kind {
        case UInt8(ascii: "+"):
            return .simpleString(String(decoding: line.dropFirst(), as: UTF8.self))
        case UInt8(ascii: "-"):
            return .error(String(decoding: line.dropFirst(), as: UTF8.self))
        case UInt8(ascii: ":"):
            return .integer(try number(line))
        case UInt8(ascii: "$"):
            let length = try number(line)
            if length == -1 { return .bulkString(nil) }
            guard length >= 0, length <= maximumBulkBytes else {
                throw RESPProtocolError(reason: "bulk string length \(length) outside 0…\(maximumBulkBytes)")
            }
            guard buffer.readableBytes >= Int(length) + 2 else { return nil }
            let bytes = buffer.readBytes(length: Int(length))!
            guard buffer.readInteger(as: UInt8.self) == UInt8(ascii: "\r"), buffer.readInteger(as: UInt8.self) == UInt8(ascii: "\n")
            else { throw RESPProtocolError(reason: "bulk string not followed by CRLF") }
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            let count = try number(line)
            if count == -1 { return .array(nil) }
            guard count >= 0, count <= maximumElements else {
                throw RESPProtocolError(reason: "array of \(count) elements outside 0…\(maximumElements)")
            }
            guard depth < maximumDepth else { throw RESPProtocolError(reason: "arrays nested deeper than \(maximumDepth)") }
            var elements: [RESPValue] = []
            elements.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let element = try parse(&buffer, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            return .array(elements)
        default:
            throw RESPProtocolError(reason: "unknown type byte 0x\(String(kind, radix: 16))")
        }
    }

    /// The next line without its CRLF (type byte included); nil while no CRLF has arrived.
    private func line(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> [UInt8]? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > maximumLineBytes { throw RESPProtocolError(reason: "line longer than \(maximumLineBytes) bytes") }
            return nil
        }
        let length = newline - view.startIndex
        guard length <= maximumLineBytes else { throw RESPProtocolError(reason: "line longer than \(maximumLineBytes) bytes") }
        guard length >= 1, view[newline - 1] == UInt8(ascii: "\r") else { throw RESPProtocolError(reason: "line not ended by CRLF") }
        let bytes = buffer.readBytes(length: length - 1)!
        buffer.moveReaderIndex(forwardBy: 2)
        return bytes
    }

    private func number(_ line: [UInt8]) throws(RESPProtocolError) -> Int64 {
        let digits = line.dropFirst()
        guard digits.count <= 20, let value = Int64(String(decoding: digits, as: UTF8.self)) else {
            throw RESPProtocolError(reason: "'\(String(decoding: digits.prefix(40), as: UTF8.self))' is not an integer")
        }
        return value
    }
}

import NIOCore
import NIOHTTP1

/// HTTP/1.1 request framing (RFC 9112) for client connections: bytes in, request parts out. A value type that takes
/// each read's bytes and hands out heads, body slices and ends, tested without a channel; `MCPConnectionHandler`
/// feeds it each read.
///
/// Strict where a proxy must be (request smuggling): one way to frame a body only (`Content-Length` or
/// `Transfer-Encoding: chunked`, never both, neither repeated; no other transfer coding), CRLF line ends only, no line
/// folding, no blank before a header's colon, no control characters in a name, value or request target, `HTTP/1.0` or
/// `HTTP/1.1` only (`HTTP1Syntax`). Anything else is an `HTTPFramingError`, after which nothing more is framed on the
/// connection. Body bytes are handed out as slices of the bytes read (no copy). Bytes after a request that ends its
/// connection (`Connection: close`, HTTP/1.0 without keep-alive, CONNECT, an `Upgrade` header) are dropped: RFC 9112
/// asks that they be ignored, and the connection handler answers that request and closes.
struct RequestFraming {
    private enum State {
        /// Awaiting or reading a request head; `scanned` bytes of the pending head have been looked at already.
        case head(scanned: Int)
        /// Reading a request's body.
        case body(BodyFraming)
        /// The connection carries no further request: bytes are dropped.
        case finished
        /// Framing failed: bytes are dropped.
        case failed
    }

    /// The most bytes a head may take.
    let maximumHeadBytes: Int
    private var state = State.head(scanned: 0)
    /// Bytes read but not framed yet (part of a head, a chunk-size line or trailers).
    private var pending = UnframedBytes()
    /// Whether the request being read lets another follow on its connection.
    private var continues = true

    /// Framing with heads bounded to `maximumHeadBytes`.
    init(maximumHeadBytes: Int) {
        self.maximumHeadBytes = maximumHeadBytes
    }

    /// Frames what `bytes` completes, handing each part to `emit` in order. Stops at the first error, which it
    /// returns once; every later call drops its bytes and returns nil.
    mutating func feed(_ bytes: ByteBuffer, _ emit: (HTTPServerRequestPart) -> Void) -> HTTPFramingError? {
        var input = pending.joined(with: bytes)
        do {
            try frame(&input, emit)
        } catch {
            state = .failed
            return error as? HTTPFramingError ?? .invalid("\(error)")
        }
        pending.hold(input)
        return nil
    }

    /// A client's close completes nothing: a request it cut short is the connection handler's to record.
    mutating func closed(_ emit: (HTTPServerRequestPart) -> Void) -> HTTPFramingError? {
        state = .finished
        return nil
    }

    private mutating func frame(_ input: inout ByteBuffer, _ emit: (HTTPServerRequestPart) -> Void) throws {
        while true {
            switch state {
            case .head(let scanned):
                guard let head = try readHead(&input, scanned: scanned) else { return }
                continues = !head.endsConnection
                emit(.head(head.head))
                state = .body(BodyFraming(head.chunked ? .chunked : .length(head.length)))
            case .body(var body):
                let ended = try body.read(&input) { emit(.body($0)) }
                guard ended else {
                    state = .body(body)
                    return
                }
                emit(.end(nil))
                state = continues ? .head(scanned: 0) : .finished
            case .finished, .failed:
                input.moveReaderIndex(to: input.writerIndex)
                return
            }
        }
    }

    // MARK: - Heads

    private struct Head {
        var head: HTTPRequestHead
        var length: Int
        var chunked: Bool
        var endsConnection: Bool
    }

    /// A whole head, if `input` holds one (leading empty lines skipped, as RFC 9112 allows).
    private mutating func readHead(_ input: inout ByteBuffer, scanned: Int) throws -> Head? {
        if scanned == 0 {
            while input.readableBytes >= 2, input.getInteger(at: input.readerIndex, as: UInt16.self) == 0x0D0A {
                input.moveReaderIndex(forwardBy: 2)
            }
            if input.readableBytes > 0, input.getInteger(at: input.readerIndex, as: UInt8.self) == 0x0A {
                throw HTTPFramingError.invalid("a line ends in LF without CR")
            }
        }
        guard let end = try HTTP1Syntax.headEnd(in: input, from: scanned, startsWithLine: true, bound: maximumHeadBytes) else {
            // Scanned up to the last three bytes, which may start the CRLFCRLF that ends the head.
            state = .head(scanned: max(0, input.readableBytes - 3))
            return nil
        }
        let head = try input.withUnsafeReadableBytes { bytes in try Self.parseHead(UnsafeRawBufferPointer(rebasing: bytes[..<end])) }
        input.moveReaderIndex(forwardBy: end)
        state = .head(scanned: 0)
        return head
    }

    /// The longest method a request line may have.
    static let maximumMethodBytes = 32

    private static func parseHead(_ bytes: UnsafeRawBufferPointer) throws -> Head {
        // The request line: method SP request-target SP HTTP-version CRLF.
        var index = 0
        while index < bytes.count, HTTP1Syntax.isTokenByte(bytes[index]) { index += 1 }
        guard index > 0, index < bytes.count, bytes[index] == 0x20 else {
            throw HTTPFramingError.invalid("the request line has no method")
        }
        // The longest registered method has 17 letters; a longer one only makes audit lines long (found by review: a
        // 70,000-byte method made a 70 KB record, past what log shippers read as one line).
        guard index <= Self.maximumMethodBytes else {
            throw HTTPFramingError.invalid("the method is longer than \(Self.maximumMethodBytes) bytes")
        }
        let method = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[..<index]), as: UTF8.self)
        index += 1
        let targetStart = index
        while index < bytes.count, bytes[index] > 0x20, bytes[index] < 0x7F { index += 1 }
        guard index > targetStart, index < bytes.count, bytes[index] == 0x20 else {
            throw HTTPFramingError.invalid("the request target is missing or holds a character outside visible ASCII")
        }
        let target = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[targetStart..<index]), as: UTF8.self)
        index += 1
        guard bytes.count - index >= 10, bytes[index + 8] == 0x0D, bytes[index + 9] == 0x0A,
            let version = HTTP1Syntax.version(UnsafeRawBufferPointer(rebasing: bytes[index..<index + 8]))
        else {
            throw HTTPFramingError.invalid("the request line does not end in HTTP/1.1 or HTTP/1.0")
        }
        var fields = HTTP1Syntax.Fields(keep: true)
        try HTTP1Syntax.readFields(
            UnsafeRawBufferPointer(rebasing: bytes[(index + 10)...]), into: &fields, keep: true,
            maximumLines: HTTP1Syntax.maximumRequestFieldLines)
        if fields.chunked && version == .http1_0 {
            throw HTTPFramingError.invalid("Transfer-Encoding in an HTTP/1.0 request")
        }
        let httpMethod = HTTPMethod(rawValue: method)
        let head = HTTPRequestHead(version: version, method: httpMethod, uri: target, headers: HTTPHeaders(fields.headers))
        return Head(
            head: head, length: fields.contentLength ?? 0, chunked: fields.chunked,
            endsConnection: !fields.connection.keepsAlive(version) || httpMethod == .CONNECT || fields.upgrade)
    }
}

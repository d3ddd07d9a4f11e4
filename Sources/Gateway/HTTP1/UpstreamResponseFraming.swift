import NIOCore
import NIOHTTP1

/// HTTP/1.1 response framing (RFC 9112) for upstream connections: bytes in, response parts out, told the method of
/// each request sent (`requestSent`), as a `HEAD`'s answer has no body. `UpstreamConnection` feeds it each read.
///
/// Informational (1xx) responses are read and dropped. A body is framed by the first rule of RFC 9112 6.3 that
/// applies: none for a `HEAD`, a 204 or 304; chunked; `Content-Length`; else up to the connection's close. The syntax is `HTTP1Syntax`'s, as strict as for requests:
/// an upstream that breaks it (both `Content-Length` and `Transfer-Encoding`, bare LFs, a coding other than
/// chunked, bytes when no request is outstanding, a close inside a response) gets an `HTTPFramingError`, and its
/// connection is closed rather than reused.
struct UpstreamResponseFraming {
    private enum State {
        /// Awaiting or reading a response head; `scanned` bytes of the pending head have been looked at already.
        case head(scanned: Int)
        /// Reading a response's body.
        case body(BodyFraming)
        /// After a `101` or an error: bytes are dropped.
        case finished
    }

    /// The most bytes a head may take.
    let maximumHeadBytes: Int
    /// The only header names kept in a response's head (nil: all). The others are still checked, and the framing
    /// headers read, but no string is made of them.
    let keptHeaders: HeaderNames?
    private var state = State.head(scanned: 0)
    private var pending = UnframedBytes()
    /// Whether each request sent and not answered yet was a `HEAD`, oldest first.
    private var outstanding: [Bool] = []
    /// Whether the response being read ends at the connection's close (no length, not chunked): its connection
    /// cannot carry another.
    private(set) var bodyEndsAtClose = false
    /// Whether the response being read leaves its connection open for another: its `Connection` options allow it
    /// (read from the field bytes, `ConnectionReuse`) and its body does not end at the close.
    private(set) var responseKeepsConnection = true

    /// Framing with heads bounded to `maximumHeadBytes`, keeping the headers named in `keptHeaders` (all if nil).
    init(maximumHeadBytes: Int, keptHeaders: HeaderNames? = nil) {
        self.maximumHeadBytes = maximumHeadBytes
        self.keptHeaders = keptHeaders
        outstanding.reserveCapacity(2)
    }

    /// A request went out with `method`: its response is framed accordingly.
    mutating func requestSent(method: HTTPMethod) {
        outstanding.append(method == .HEAD)
    }

    /// Frames what `bytes` completes, handing each part to `emit` in order. Stops at the first error, which it
    /// returns once; every later call drops its bytes and returns nil.
    mutating func feed(_ bytes: ByteBuffer, _ emit: (HTTPClientResponsePart) -> Void) -> HTTPFramingError? {
        var input = pending.joined(with: bytes)
        do {
            try frame(&input, emit)
        } catch {
            state = .finished
            return error as? HTTPFramingError ?? .invalid("\(error)")
        }
        pending.hold(input)
        return nil
    }

    /// The connection closed: ends a body read up to the close, or is an error if a response was cut short.
    mutating func closed(_ emit: (HTTPClientResponsePart) -> Void) -> HTTPFramingError? {
        defer { state = .finished }
        switch state {
        case .body(let body) where body.endsAtClose:
            emit(.end(nil))
            return nil
        case .head:
            return !pending.isEmpty ? .invalid("the connection closed inside a response head") : nil
        case .body:
            return .invalid("the connection closed inside a response body")
        case .finished:
            return nil
        }
    }

    private mutating func frame(_ input: inout ByteBuffer, _ emit: (HTTPClientResponsePart) -> Void) throws {
        while input.readableBytes > 0 {
            switch state {
            case .head(let scanned):
                guard let isHead = outstanding.first else {
                    throw HTTPFramingError.invalid("bytes from the upstream with no request outstanding")
                }
                guard let end = try HTTP1Syntax.headEnd(in: input, from: scanned, startsWithLine: true, bound: maximumHeadBytes)
                else {
                    state = .head(scanned: max(0, input.readableBytes - 3))
                    return
                }
                let (head, fields) = try input.withUnsafeReadableBytes { bytes in
                    try Self.parseHead(UnsafeRawBufferPointer(rebasing: bytes[..<end]), keeping: keptHeaders)
                }
                input.moveReaderIndex(forwardBy: end)
                state = .head(scanned: 0)
                let status = head.status.code
                bodyEndsAtClose = false
                if status < 200 && status != 101 {
                    // Informational (100 Continue, 103 Early Hints): not relayed (as NIO's decoder did not hand them
                    // on either); the final response is still to come.
                    continue
                }
                emit(.head(head))
                if status == 101 {
                    // What follows is not HTTP (the gateway never asks to switch protocols; the connection fails).
                    emit(.end(nil))
                    state = .finished
                } else if isHead || status == 204 || status == 304 {
                    endResponse(emit)
                } else if fields.chunked {
                    state = .body(BodyFraming(.chunked))
                } else if let length = fields.contentLength {
                    state = .body(BodyFraming(.length(length)))
                } else {
                    bodyEndsAtClose = true
                    state = .body(BodyFraming(.untilClose))
                }
                responseKeepsConnection = fields.connection.keepsAlive(head.version) && !bodyEndsAtClose
            case .body(var body):
                let ended = try body.read(&input) { emit(.body($0)) }
                guard ended else {
                    state = .body(body)
                    return
                }
                endResponse(emit)
            case .finished:
                input.moveReaderIndex(to: input.writerIndex)
            }
        }
        // A response without a body that ended this read: nothing left to frame.
        if case .body(var body) = state, (try? body.read(&input) { _ in }) == true {
            endResponse(emit)
        }
    }

    private mutating func endResponse(_ emit: (HTTPClientResponsePart) -> Void) {
        outstanding.removeFirst()
        state = .head(scanned: 0)
        emit(.end(nil))
    }

    /// `HTTP-version SP status-code [SP reason-phrase] CRLF`, then the fields.
    private static func parseHead(
        _ bytes: UnsafeRawBufferPointer, keeping keptHeaders: HeaderNames?
    ) throws -> (HTTPResponseHead, HTTP1Syntax.Fields) {
        guard bytes.count >= 14, let version = HTTP1Syntax.version(UnsafeRawBufferPointer(rebasing: bytes[0..<8])),
            bytes[8] == 0x20
        else { throw HTTPFramingError.invalid("the status line does not start with HTTP/1.1 or HTTP/1.0") }
        var code = 0
        for index in 9..<12 {
            guard bytes[index] >= 0x30, bytes[index] <= 0x39 else { throw HTTPFramingError.invalid("the status code is not three digits") }
            code = code * 10 + Int(bytes[index] - 0x30)
        }
        guard code >= 100, code <= 599 else { throw HTTPFramingError.invalid("status code \(code) is out of range") }
        // The reason phrase, if any, is ignored, but must hold no control characters.
        var index = 12
        if bytes[index] == 0x20 { index += 1 }
        let lineEnd = bytes[index...].firstIndex(of: 0x0D)!
        guard bytes[lineEnd + 1] == 0x0A, index == 12 ? lineEnd == 12 : true,
            !HTTP1Syntax.holdsControlCharacter(UnsafeRawBufferPointer(rebasing: bytes[index..<lineEnd]))
        else { throw HTTPFramingError.invalid("the status line holds a control character") }
        var fields = HTTP1Syntax.Fields(keep: true, keptNames: keptHeaders)
        try HTTP1Syntax.readFields(
            UnsafeRawBufferPointer(rebasing: bytes[(lineEnd + 2)...]), into: &fields, keep: true,
            maximumLines: HTTP1Syntax.maximumResponseFieldLines)
        // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message makes its framing faulty (a reader of 1.0 may not
        // know chunks), as for requests.
        if fields.chunked && version == .http1_0 { throw HTTPFramingError.invalid("Transfer-Encoding in an HTTP/1.0 response") }
        let head = HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: code), headers: HTTPHeaders(fields.headers))
        return (head, fields)
    }
}

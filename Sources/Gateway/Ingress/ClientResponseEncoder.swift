import NIOCore
import NIOHTTP1

/// Writes the gateway's responses to a client as HTTP/1.1 bytes. The head and the parts written after it until the
/// next flush leave as one buffer (one TLS record), where NIO's `HTTPResponseEncoder` wrote head, body and end as
/// separate buffers and rebuilt the head's headers to frame it.
///
/// Not a pipeline step of its own: the connection handler calls it with its own context (`write`, `flush`, `close`),
/// and its bytes go to the handler below (one pipeline step fewer for every part of every response, and no response
/// part wrapped in `NIOAny`).
///
/// Framing follows the status, as NIO's encoder did: a 1xx, 204 or 304 head carries no `Content-Length` or
/// `Transfer-Encoding` (they are removed) and no body; any other head keeps its `Content-Length` (and loses a
/// `Transfer-Encoding` beside it), and without one is sent chunked (HTTP/1.1) or delimited by the close (HTTP/1.0).
///
/// It also holds the framing it declared, so that no write can desynchronise the client: a header name or value with a
/// control character (CR, LF, NUL or another but HTAB), a `Content-Length` that is not plain digits, a head while a
/// response is still open, a body after a head that declared none, more body bytes than `Content-Length` said, an end
/// before all of them, a file region or trailers, anything after a body delimited by the connection's close — each
/// fails its write and closes the connection.
final class ClientResponseEncoder {

    /// What the encoder refuses to write.
    enum EncodingError: Error, Equatable {
        /// A header name or value contains a control character: CR, LF, NUL (response splitting) or another but HTAB.
        case invalidHeader(String)
        /// A body part the head's framing does not allow, or an end before the declared body was complete.
        case framing(String)
        /// A body as a file region, or trailers: never sent by the gateway.
        case unsupportedPart
    }

    /// How the current response's body is delimited.
    enum Framing: Equatable {
        /// No body may follow (1xx, 204, 304), or the response is not under way.
        case none
        /// Exactly this many bytes remain.
        case length(remaining: Int)
        /// Each part as a chunk; the end writes the last chunk.
        case chunked
        /// Until the connection closes (an HTTP/1.0 head without `Content-Length`).
        case close
    }

    /// Parts up to this size are copied behind what is pending; larger ones are written as their own buffer.
    static let coalescedBodyBytes = 16 * 1024

    private var framing = Framing.none
    /// A final head was written and its end was not: no other head may start.
    private var responseOpen = false
    /// A body delimited by the connection's close has ended: any further write is refused.
    private var endedByClose = false
    /// The next head answers a HEAD request.
    private var nextAnswersHEAD = false
    private var pending = PendingWrite()
    /// The `Date` field written into every final head that carries none (all of them but a test's).
    private var date = HTTPDate()
    /// A write was refused: the connection is closing, and nothing more is written to it.
    private var failed = false

    /// Allocates the buffers the encoder writes: the channel's, set by the connection handler when it is added (asked
    /// through the channel, it is a call through the channel's existential and an event-loop check each time).
    var allocator = ByteBufferAllocator()

    /// Whether heads without a `Date` get one (off only for tests that compare bytes).
    private let datesResponses: Bool

    /// A new encoder, for one client connection.
    init(datesResponses: Bool = true) { self.datesResponses = datesResponses }

    /// The next head answers a HEAD request: it keeps the `Content-Length` a GET would get, and no body follows.
    func nextHeadAnswersHEAD() { nextAnswersHEAD = true }

    /// Encodes `part` and writes its bytes from `context` (the handler above the encoder's bytes), or holds them for
    /// the next flush. A part the framing does not allow fails its write: `onRefusal` hears why, then what is pending
    /// is dropped and the connection closes.
    func write(
        _ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext,
        onRefusal: (EncodingError) -> Void
    ) {
        guard !failed else {
            promise?.fail(EncodingError.framing("the connection is closing after a refused write"))
            return
        }
        func refuse(_ error: EncodingError) { self.refuse(error, promise: promise, context: context, onRefusal: onRefusal) }
        if endedByClose {
            return refuse(.framing("a write after a body delimited by the connection's close"))
        }
        switch part {
        case .head(let head):
            guard !responseOpen else {
                return refuse(.framing("a head while the previous response is still open"))
            }
            var buffer = allocator.buffer(capacity: 256)
            let answersHEAD = nextAnswersHEAD
            nextAnswersHEAD = false
            do {
                framing = try Self.render(head, into: &buffer, answersHEAD: answersHEAD, date: datesResponses ? date.currentField() : nil)
            } catch {
                return refuse(error)
            }
            // A 1xx head is followed by the final one.
            let code = head.status.code
            responseOpen = !(100..<200).contains(code) || code == 101
            append(&buffer, promise: promise, context: context)
        case .body(.byteBuffer(var body)):
            switch framing {
            case .none:
                return refuse(.framing("a body after a head that declared none"))
            case .length(let remaining):
                guard body.readableBytes <= remaining else {
                    return refuse(.framing("more body than its Content-Length"))
                }
                framing = .length(remaining: remaining - body.readableBytes)
                append(&body, promise: promise, context: context)
            case .close:
                append(&body, promise: promise, context: context)
            case .chunked:
                // An empty chunk would end the body: nothing to write.
                guard body.readableBytes > 0 else { return append(nil, promise: promise, context: context) }
                if body.readableBytes <= Self.coalescedBodyBytes {
                    pending.write(startingWith: allocator.buffer(capacity: body.readableBytes + 16)) { buffer in
                        Self.writeChunkSize(body.readableBytes, into: &buffer)
                        buffer.writeBuffer(&body)
                        buffer.writeStaticString("\r\n")
                    }
                    pending.hold(promise)
                } else {
                    var prefix = allocator.buffer(capacity: 16)
                    Self.writeChunkSize(body.readableBytes, into: &prefix)
                    append(&prefix, promise: nil, context: context)
                    append(&body, promise: nil, context: context)
                    var suffix = ByteBuffer(staticString: "\r\n")
                    append(&suffix, promise: promise, context: context)
                }
            }
        case .body(.fileRegion):
            refuse(.unsupportedPart)
        case .end(let trailers):
            guard trailers == nil else { return refuse(.unsupportedPart) }
            let ended = framing
            framing = .none
            responseOpen = false
            switch ended {
            case .length(let remaining) where remaining > 0:
                return refuse(.framing("the response ended \(remaining) bytes short of its Content-Length"))
            case .chunked:
                var last = ByteBuffer(staticString: "0\r\n\r\n")
                append(&last, promise: promise, context: context)
            case .close:
                // The body ends with the connection (which the handler above closes): nothing may follow it.
                endedByClose = true
                append(nil, promise: promise, context: context)
            default:
                append(nil, promise: promise, context: context)
            }
            writePending(context: context)
        }
    }

    /// Writes what is pending and flushes.
    func flush(context: ChannelHandlerContext) {
        writePending(context: context)
        context.flush()
    }

    /// Closes the connection; what is pending was written before the close, and goes out first.
    func close(context: ChannelHandlerContext, mode: CloseMode = .all, promise: EventLoopPromise<Void>? = nil) {
        writePending(context: context)
        context.flush()
        context.close(mode: mode, promise: promise)
    }

    /// The connection's pipeline is gone: what is pending is never written.
    func dropPending() {
        pending.take().promise?.fail(ChannelError.ioOnClosedChannel)
    }

    /// The status line and headers, framed as the type's documentation says, with the `date` field line when the head
    /// has no `Date`; returns the framing of the body. A head
    /// that `answersHEAD` keeps its headers as they are (they describe the body a GET would get), and no body follows.
    static func render(
        _ head: HTTPResponseHead, into buffer: inout ByteBuffer, answersHEAD: Bool = false, date: [UInt8]? = nil
    ) throws(EncodingError) -> Framing {
        let status = head.status.code
        let mayHaveBody = !((100..<200).contains(status) || status == 204 || status == 304)
        buffer.writeStaticString("HTTP/")
        HeaderText.write(head.version, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(String(status))
        buffer.writeInteger(UInt8(ascii: " "))
        let reason = head.status.reasonPhrase
        guard HeaderText.fitsOnOneLine(reason) else { throw .invalidHeader("reason phrase") }
        buffer.writeString(reason)
        buffer.writeStaticString("\r\n")
        var length: Int?
        var dated = false
        for (name, value) in head.headers {
            guard HeaderText.fitsOnOneLine(name), !name.isEmpty else { throw .invalidHeader("header name") }
            guard HeaderText.fitsOnOneLine(value) else { throw .invalidHeader("value of header \(name)") }
            if HeaderText.isName(name, "transfer-encoding") && !answersHEAD { continue }
            if HeaderText.isName(name, "content-length") && !answersHEAD {
                guard mayHaveBody else { continue }
                guard length == nil, !value.isEmpty, value.utf8.count <= 18,
                    value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let declared = Int(value)
                else {
                    throw .invalidHeader("Content-Length \(value)")
                }
                length = declared
            }
            if !dated && HeaderText.isName(name, "date") { dated = true }
            HeaderText.writeField(name, value, into: &buffer)
        }
        // RFC 9110 §6.6.1: a final response carries the time it was made (1xx need none). The gateway writes its own
        // on relayed answers too (an upstream's is not kept: one string fewer per answer).
        if !dated, status >= 200, let date { buffer.writeBytes(date) }
        let framing: Framing
        if !mayHaveBody || answersHEAD {
            framing = .none
        } else if let length {
            framing = .length(remaining: length)
        } else if head.version.major == 1 && head.version.minor >= 1 {
            buffer.writeStaticString("Transfer-Encoding: chunked\r\n")
            framing = .chunked
        } else {
            framing = .close
        }
        buffer.writeStaticString("\r\n")
        return framing
    }

    private static func writeChunkSize(_ size: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(String(size, radix: 16))
        buffer.writeStaticString("\r\n")
    }

    /// Adds small `bytes` behind what is pending (copied), or starts the pending buffer with them; writes large ones
    /// at once, after what is pending.
    private func append(_ bytes: inout ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if bytes.readableBytes > Self.coalescedBodyBytes {
            writePending(context: context)
            context.write(NIOAny(bytes), promise: promise)
            return
        }
        pending.append(&bytes)
        pending.hold(promise)
    }

    private func append(_ nothing: ByteBuffer?, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard var bytes = nothing else {
            if pending.isEmpty, let promise {
                // Everything before was written already: this promise completes after it.
                context.write(NIOAny(allocator.buffer(capacity: 0)), promise: promise)
            } else {
                pending.hold(promise)
            }
            return
        }
        append(&bytes, promise: promise, context: context)
    }

    private func writePending(context: ChannelHandlerContext) {
        let (buffer, promise) = pending.take()
        guard let buffer else { return }
        context.write(NIOAny(buffer), promise: promise)
    }

    /// Fails the write, drops what is pending (it cannot be framed any more) and closes the connection.
    private func refuse(
        _ error: EncodingError, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext, onRefusal: (EncodingError) -> Void
    ) {
        failed = true
        pending.take().promise?.fail(error)
        promise?.fail(error)
        onRefusal(error)
        // Earlier, complete responses already handed down still go out; the refused one does not.
        context.flush()
        context.close(promise: nil)
    }
}

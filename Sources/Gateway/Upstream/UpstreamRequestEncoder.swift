import NIOCore
import NIOHTTP1

/// Writes the gateway's upstream requests as HTTP/1.1 bytes. The head and a body that fits in one piece leave as one
/// buffer: one write to the socket (and one TLS record to an `https` upstream), where NIO's `HTTPRequestEncoder`
/// writes head, body and end as separate buffers and checks again the framing headers the gateway has already set.
///
/// It serves what `UpstreamConnection.send` writes: a head that carries its own framing (`Content-Length` when a body
/// follows, nothing when none does), then at most one body buffer, then the end. A header name or value with a CR,
/// LF or NUL byte, a file-region body or trailers fail their write (the request then fails, and the client gets 502):
/// the gateway never sends them, and none of them may reach the upstream. After a refused head, the request's body and
/// end are refused too, so no body is ever written without its head.
final class UpstreamRequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    /// What the encoder refuses to write.
    enum EncodingError: Error, Equatable {
        /// A header name or value contains CR, LF or NUL (header injection).
        case invalidHeader(String)
        /// A body as a file region, or trailers: never sent by the gateway.
        case unsupportedPart
    }

    /// Bodies up to this size are copied behind the head; larger ones are written as their own buffer.
    static let coalescedBodyBytes = 16 * 1024

    private var pending = PendingWrite()
    /// The current request's head was refused: its body and end are refused too (never written without a head).
    private var refused = false

    /// A new encoder, for one upstream connection.
    init() {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            writePending(context: context)
            var buffer = context.channel.allocator.buffer(capacity: 512)
            do {
                try Self.render(head, into: &buffer)
            } catch {
                refused = true
                promise?.fail(error)
                context.fireErrorCaught(error)
                return
            }
            refused = false
            pending.append(&buffer)
            pending.hold(promise)
        case .body where refused, .end where refused:
            promise?.fail(EncodingError.unsupportedPart)
        case .body(.byteBuffer(var body)):
            if !pending.isEmpty, body.readableBytes <= Self.coalescedBodyBytes {
                pending.append(&body)
                pending.hold(promise)
            } else {
                writePending(context: context)
                context.write(wrapOutboundOut(.byteBuffer(body)), promise: promise)
            }
        case .body(.fileRegion):
            fail(promise, context: context)
        case .end(let trailers):
            guard trailers == nil else { return fail(promise, context: context) }
            if pending.isEmpty, let promise {
                // Everything was written already: the end completes after it.
                context.write(wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
            } else {
                pending.hold(promise)
            }
            writePending(context: context)
        }
    }

    func flush(context: ChannelHandlerContext) {
        writePending(context: context)
        context.flush()
    }

    /// `METHOD target HTTP/1.1`, the headers as given, and the blank line.
    static func render(_ head: HTTPRequestHead, into buffer: inout ByteBuffer) throws(EncodingError) {
        buffer.writeString(head.method.rawValue)
        buffer.writeInteger(UInt8(ascii: " "))
        guard HeaderText.fitsOnOneLine(head.uri) else { throw .invalidHeader("request target") }
        buffer.writeString(head.uri)
        buffer.writeStaticString(" HTTP/")
        HeaderText.write(head.version, into: &buffer)
        buffer.writeStaticString("\r\n")
        for (name, value) in head.headers {
            guard HeaderText.fitsOnOneLine(name) else { throw .invalidHeader("header name") }
            guard HeaderText.fitsOnOneLine(value) else { throw .invalidHeader("value of header \(name)") }
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    private func writePending(context: ChannelHandlerContext) {
        let (buffer, promise) = pending.take()
        guard let buffer else { return }
        context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
    }

    private func fail(_ promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        promise?.fail(EncodingError.unsupportedPart)
        context.fireErrorCaught(EncodingError.unsupportedPart)
    }
}

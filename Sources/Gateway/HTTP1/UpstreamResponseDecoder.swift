import NIOCore
import NIOHTTP1

/// The pipeline step that frames an upstream connection's bytes into responses (`UpstreamResponseFraming`), in place of
/// NIO's HTTP/1.1 decoder. Inbound only: the connection tells it each request's method (`requestSent`) instead of
/// it watching the writes, so it is not on the path of any write or flush. The close of the connection ends a body
/// read up to the close (before the close itself goes up); a response cut short by the close is an error.
final class UpstreamResponseDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart

    private var framing: UpstreamResponseFraming
    /// Whether parts are being passed up now: a read that arrives meanwhile waits in `queued`, so parts never
    /// overtake each other.
    private var firing = false
    private var queued: [ByteBuffer] = []
    private var scratch: [HTTPClientResponsePart] = []

    /// Frames responses whose heads take at most `maximumHeadBytes`.
    init(maximumHeadBytes: Int = 1 << 20) {
        framing = UpstreamResponseFraming(maximumHeadBytes: maximumHeadBytes)
    }

    /// A request went out with `method`: its response is framed accordingly (`HEAD`'s has no body).
    func requestSent(method: HTTPMethod) { framing.requestSent(method: method) }

    /// Whether the response being read ends at the connection's close: the connection carries no other.
    var bodyEndsAtClose: Bool { framing.bodyEndsAtClose }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard !firing else { return queued.append(bytes) }
        firing = true
        defer { firing = false }
        var next: ByteBuffer? = bytes
        while let input = next {
            var parts: [HTTPClientResponsePart] = []
            swap(&parts, &scratch)
            let error = framing.feed(input) { parts.append($0) }
            for part in parts { context.fireChannelRead(wrapInboundOut(part)) }
            parts.removeAll(keepingCapacity: true)
            if scratch.isEmpty { swap(&parts, &scratch) }
            if let error { context.fireErrorCaught(error) }
            next = queued.isEmpty ? nil : queued.removeFirst()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        var end: HTTPClientResponsePart?
        if let error = framing.closed({ end = $0 }) { context.fireErrorCaught(error) }
        if let end { context.fireChannelRead(wrapInboundOut(end)) }
        context.fireChannelInactive()
    }
}

import NIOCore
import NIOHTTP1

/// The pipeline step that frames a client connection's bytes into requests (`RequestFraming`), in place of NIO's
/// HTTP/1.1 decoder: no C parser calling back into Swift for every header, no second copy of what the TLS handler
/// read, and the framing rules a proxy in front of other servers needs, in one place. Parts go up the pipeline in
/// order; a framing error goes up as `errorCaught` once, after which the connection's bytes are dropped.
final class RequestDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart

    private var framing: RequestFraming
    /// Whether parts are being passed up now: a read that arrives meanwhile (a handler above reading more
    /// synchronously) waits in `queued`, so parts never overtake each other.
    private var firing = false
    private var queued: [ByteBuffer] = []
    /// The parts of one read, kept between reads so that framing one allocates nothing.
    private var scratch: [HTTPServerRequestPart] = []

    /// Frames requests whose heads take at most `maximumHeadBytes`.
    init(maximumHeadBytes: Int) {
        framing = RequestFraming(maximumHeadBytes: maximumHeadBytes)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard !firing else { return queued.append(bytes) }
        firing = true
        defer { firing = false }
        var next: ByteBuffer? = bytes
        while let input = next {
            var parts: [HTTPServerRequestPart] = []
            swap(&parts, &scratch)
            let error = framing.feed(input) { parts.append($0) }
            for part in parts { context.fireChannelRead(wrapInboundOut(part)) }
            parts.removeAll(keepingCapacity: true)
            if scratch.isEmpty { swap(&parts, &scratch) }
            if let error { context.fireErrorCaught(error) }
            next = queued.isEmpty ? nil : queued.removeFirst()
        }
    }
}

import NIOCore
import NIOHTTP1

/// A framing of HTTP/1.1 bytes into message parts: `RequestFraming` (a client's requests) and
/// `UpstreamResponseFraming` (an upstream's responses).
protocol HTTP1Framing {
    /// What it frames bytes into.
    associatedtype Part

    /// Frames what `bytes` completes, handing each part to `emit` in order; the first error is returned once, and
    /// nothing is framed after it.
    mutating func feed(_ bytes: ByteBuffer, _ emit: (Part) -> Void) -> HTTPFramingError?

    /// The connection closed: parts that the close completes, or an error for a message it cut short.
    mutating func closed(_ emit: (Part) -> Void) -> HTTPFramingError?
}

/// The pipeline step around an `HTTP1Framing`, in place of NIO's HTTP/1.1 decoders: no C parser calling back into
/// Swift for every header, no second copy of what the TLS handler read. Parts go up the pipeline in order; a
/// framing error goes up as `errorCaught` once, after which the connection's bytes are dropped. Inbound only: it is
/// on the path of no write or flush.
final class HTTP1Decoder<Framing: HTTP1Framing>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Framing.Part

    /// The framing (the upstream's decoder tells it each request's method).
    var framing: Framing
    /// Whether parts are being passed up now: a read that arrives meanwhile (a handler above reading more
    /// synchronously) waits in `queued`, so parts never overtake each other.
    private var firing = false
    /// The connection closed while parts were being passed up (a handler above closed it): its close goes up
    /// after them.
    private var closedWhileFiring = false
    private var queued: [ByteBuffer] = []
    /// The parts of one read, kept between reads so that framing one allocates nothing.
    private var scratch: [Framing.Part] = []

    /// A decoder framing with `framing`.
    init(_ framing: Framing) {
        self.framing = framing
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard !firing else { return queued.append(bytes) }
        firing = true
        var next: ByteBuffer? = bytes
        while let input = next {
            var parts: [Framing.Part] = []
            swap(&parts, &scratch)
            let error = framing.feed(input) { parts.append($0) }
            for part in parts { context.fireChannelRead(wrapInboundOut(part)) }
            parts.removeAll(keepingCapacity: true)
            if scratch.isEmpty { swap(&parts, &scratch) }
            if let error { context.fireErrorCaught(error) }
            next = queued.isEmpty ? nil : queued.removeFirst()
        }
        firing = false
        if closedWhileFiring {
            closedWhileFiring = false
            closeFraming(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard !firing else {
            closedWhileFiring = true
            return
        }
        closeFraming(context: context)
    }

    /// The close goes to the framing (a body read up to it ends; a message cut short is an error), then up.
    private func closeFraming(context: ChannelHandlerContext) {
        var parts: [Framing.Part] = []
        if let error = framing.closed({ parts.append($0) }) { context.fireErrorCaught(error) }
        for part in parts { context.fireChannelRead(wrapInboundOut(part)) }
        context.fireChannelInactive()
    }
}

/// Frames a client connection's requests.
typealias RequestDecoder = HTTP1Decoder<RequestFraming>

extension HTTP1Decoder where Framing == RequestFraming {
    /// Frames requests whose heads take at most `maximumHeadBytes`.
    convenience init(maximumHeadBytes: Int) {
        self.init(RequestFraming(maximumHeadBytes: maximumHeadBytes))
    }
}

/// Frames an upstream connection's responses; the connection tells it each request's method.
typealias UpstreamResponseDecoder = HTTP1Decoder<UpstreamResponseFraming>

extension HTTP1Decoder where Framing == UpstreamResponseFraming {
    /// Frames responses whose heads take at most `maximumHeadBytes`.
    convenience init(maximumHeadBytes: Int = 1 << 20) {
        self.init(UpstreamResponseFraming(maximumHeadBytes: maximumHeadBytes))
    }

    /// A request went out with `method`: its response is framed accordingly (`HEAD`'s has no body).
    func requestSent(method: HTTPMethod) { framing.requestSent(method: method) }

    /// Whether the response being read ends at the connection's close: the connection carries no other.
    var bodyEndsAtClose: Bool { framing.bodyEndsAtClose }
}

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

/// The pipeline step that frames an upstream connection's responses (`UpstreamResponseFraming`). A concrete class:
/// NIO calls a handler through its protocol witnesses, which for a generic handler class run unspecialised code (a
/// decoder generic over its framing measured 7 % more CPU per call). The connection
/// tells it each request's method (`requestSent`) instead of it watching the writes, so it is inbound only. The
/// close of the connection ends a body read up to the close (before the close itself goes up); a response cut
/// short by the close is an error.
final class UpstreamResponseDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart

    private var framing: UpstreamResponseFraming
    private let relay = FramedPartsRelay<HTTPClientResponsePart>()

    /// Frames responses whose heads take at most `maximumHeadBytes`.
    init(maximumHeadBytes: Int = 1 << 20) {
        framing = UpstreamResponseFraming(maximumHeadBytes: maximumHeadBytes)
    }

    /// A request went out with `method`: its response is framed accordingly (`HEAD`'s has no body).
    func requestSent(method: HTTPMethod) { framing.requestSent(method: method) }

    /// Whether the response being read ends at the connection's close: the connection carries no other.
    var bodyEndsAtClose: Bool { framing.bodyEndsAtClose }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.read(
            unwrapInboundIn(data), frame: { self.framing.feed($0, $1) }, fire: { context.fireChannelRead(self.wrapInboundOut($0)) },
            fail: { context.fireErrorCaught($0) }, close: { self.close(context: context) })
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.closed { close(context: context) }
    }

    private func close(context: ChannelHandlerContext) {
        relay.close(
            frame: { self.framing.closed($0) }, fire: { context.fireChannelRead(self.wrapInboundOut($0)) },
            fail: { context.fireErrorCaught($0) })
        context.fireChannelInactive()
    }
}

/// What both framings' owners (`MCPConnectionHandler` for requests, `UpstreamResponseDecoder` for responses) do
/// around their framing: pass a read's parts up in order, then its error; hold a read or the
/// close that arrives while parts are being passed up (a handler above reading more, or closing, from inside a
/// read) until they have all gone, so parts never overtake each other and the close never comes between a head
/// and its body. The framing stays with the decoder, so nothing holds it while parts go up.
final class FramedPartsRelay<Part> {
    private var firing = false
    private var closedWhileFiring = false
    private var queued: [ByteBuffer] = []
    /// The parts of one read, kept between reads so that framing one allocates nothing.
    private var scratch: [Part] = []

    /// Frames `bytes` (and any read that arrives meanwhile) with `frame`, passing each part to `fire` and an error
    /// to `fail`; a close that arrived meanwhile runs `close` at the end.
    func read(
        _ bytes: ByteBuffer, frame: (ByteBuffer, (Part) -> Void) -> HTTPFramingError?, fire: (Part) -> Void,
        fail: (HTTPFramingError) -> Void, close: () -> Void
    ) {
        guard !firing else { return queued.append(bytes) }
        firing = true
        var next: ByteBuffer? = bytes
        while let input = next {
            var parts: [Part] = []
            swap(&parts, &scratch)
            let error = frame(input) { parts.append($0) }
            for part in parts { fire(part) }
            parts.removeAll(keepingCapacity: true)
            if scratch.isEmpty { swap(&parts, &scratch) }
            if let error { fail(error) }
            next = queued.isEmpty ? nil : queued.removeFirst()
        }
        firing = false
        if closedWhileFiring {
            closedWhileFiring = false
            close()
        }
    }

    /// The connection closed: `close` runs now, or after the parts being passed up.
    func closed(_ close: () -> Void) {
        guard !firing else {
            closedWhileFiring = true
            return
        }
        close()
    }

    /// Hands the framing the close (`frame`): the parts it completes go to `fire`, an error for a message it cut
    /// short to `fail` first.
    func close(frame: ((Part) -> Void) -> HTTPFramingError?, fire: (Part) -> Void, fail: (HTTPFramingError) -> Void) {
        var parts: [Part] = []
        if let error = frame({ parts.append($0) }) { fail(error) }
        for part in parts { fire(part) }
    }
}

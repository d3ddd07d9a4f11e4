import NIOCore
import NIOHTTP1

/// NIO's HTTP/1.1 response decoder, told each request's method directly rather than by watching the writes.
///
/// `ByteToMessageHandler(HTTPResponseDecoder())` is also an outbound handler: NIO's decoder learns which responses
/// answer `HEAD` (and so have no body) from the request heads written through it. That put the handler on the path
/// of every write, flush and `read()` of the upstream connection, and each write there was unwrapped through
/// generic code resolved at run time. Here the connection hands the decoder each head it sends (`requestSent`),
/// and the handler around it is inbound only. The decoding itself is NIO's, unchanged.
struct UpstreamResponseDecoder: ByteToMessageDecoder {
    typealias InboundOut = HTTPClientResponsePart

    /// The decoder, shared with the connection that tells it about requests.
    let decoder: HTTPResponseDecoder

    /// A decoder that drops bytes left over after an upgrade (the gateway never upgrades upstream connections).
    init() {
        decoder = HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)
    }

    /// A request sent on the connection: its response is read by its method (`HEAD` has no body).
    func requestSent(method: HTTPMethod) {
        decoder.write(data: .head(Self.head(of: method)))
    }

    /// A request head with `method`, as the decoder takes it (it reads only the method): made once for the methods
    /// the gateway forwards.
    static func head(of method: HTTPMethod) -> HTTPRequestHead {
        switch method {
        case .POST: postHead
        case .GET: getHead
        case .DELETE: deleteHead
        default: HTTPRequestHead(version: .http1_1, method: method, uri: "/")
        }
    }
    private static let postHead = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/")
    private static let getHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
    private static let deleteHead = HTTPRequestHead(version: .http1_1, method: .DELETE, uri: "/")

    func decoderAdded(context: ChannelHandlerContext) { decoder.decoderAdded(context: context) }

    func decoderRemoved(context: ChannelHandlerContext) { decoder.decoderRemoved(context: context) }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        try decoder.decode(context: context, buffer: &buffer)
    }

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decoder.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
    }

    func shouldReclaimBytes(buffer: ByteBuffer) -> Bool { decoder.shouldReclaimBytes(buffer: buffer) }
}

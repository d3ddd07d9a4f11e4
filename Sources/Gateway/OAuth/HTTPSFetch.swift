import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TLS

/// One request from the gateway to a URL its configuration names — an issuer's metadata, a key set, a token
/// introspection endpoint — through the gateway's own OpenSSL client (`TLSHandler`), on an event loop: nothing waits
/// for it on a thread. Redirects are refused (a configured URL is the only one ever fetched), the answer is bounded
/// in size and in time, and only `https` is spoken.
struct HTTPSFetch: Sendable {
    /// A complete answer.
    struct Response: Sendable {
        /// The status code.
        let status: Int
        /// The response headers.
        let headers: HTTPHeaders
        /// The body.
        let body: [UInt8]
    }

    /// Why a fetch gave no usable answer.
    enum Failure: Error, CustomStringConvertible {
        case connect(String)
        case timedOut
        case tooLarge(Int)
        case redirected(Int)
        case status(Int)
        case closedEarly

        var description: String {
            switch self {
            case .connect(let why): "cannot connect: \(why)"
            case .timedOut: "timed out"
            case .tooLarge(let bound): "the answer exceeds \(bound) bytes"
            case .redirected(let status): "redirected (\(status)); redirects are not followed"
            case .status(let status): "answered \(status)"
            case .closedEarly: "the connection closed before the answer was complete"
            }
        }
    }

    /// Where requests go: the URL's host, port, path and TLS client context (built once).
    let endpoint: UpstreamEndpoint
    /// Largest answer accepted.
    let maximumBytes: Int
    /// How long the whole exchange may take.
    let timeout: TimeAmount

    /// A fetcher for `url` (https only), trusting `caFile` (nil: the system's CA bundle).
    init(url: String, caFile: String?, maximumBytes: Int, timeout: TimeAmount = .seconds(5)) throws(UpstreamConfigurationError) {
        guard url.hasPrefix("https://") else { throw UpstreamConfigurationError(url: url, reason: "must be an https:// URL") }
        endpoint = try UpstreamEndpoint(UpstreamConfiguration(url: url, caFile: caFile), tenant: "")  // one connection per fetch, never pooled
        self.maximumBytes = maximumBytes
        self.timeout = timeout
    }

    /// Sends one request (`GET`, or `POST` with a form body) and collects the answer on `eventLoop`. Only a `2xx`
    /// answer succeeds (with `acceptStatus`, also those statuses).
    func send(
        _ method: HTTPMethod = .GET, headers extra: [(String, String)] = [], body: [UInt8]? = nil, on eventLoop: any EventLoop,
        acceptStatus: Set<Int> = []
    ) -> EventLoopFuture<Response> {
        let promise = eventLoop.makePromise(of: Response.self)
        var headers = HTTPHeaders([("Host", endpoint.hostHeader), ("Accept", "application/json"), ("Connection", "close")])
        for (name, value) in extra { headers.add(name: name, value: value) }
        if let body { headers.add(name: "Content-Length", value: String(body.count)) }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: endpoint.path, headers: headers)
        let endpoint = self.endpoint
        let maximumBytes = self.maximumBytes
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(
                        TLSHandler(context: endpoint.tls!, serverHostname: endpoint.serverName, logger: Logger(label: "mcpgw.fetch")))
                    try pipeline.addHTTPClientHandlers()
                    try pipeline.addHandler(
                        Collector(promise: promise, maximumBytes: maximumBytes, acceptStatus: acceptStatus))
                }
            }
        let timer = eventLoop.scheduleTask(in: timeout) { promise.fail(Failure.timedOut) }
        bootstrap.connect(host: endpoint.host, port: endpoint.port).whenComplete { result in
            switch result {
            case .failure(let error):
                promise.fail(Failure.connect("\(error)"))
            case .success(let channel):
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                var buffer: ByteBuffer?
                if let body { buffer = channel.allocator.buffer(bytes: body) }
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                if let buffer { channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil) }
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    /// Collects one response, bounded.
    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Response>
        let maximumBytes: Int
        let acceptStatus: Set<Int>
        var head: HTTPResponseHead?
        var body: [UInt8] = []

        init(promise: EventLoopPromise<Response>, maximumBytes: Int, acceptStatus: Set<Int>) {
            self.promise = promise
            self.maximumBytes = maximumBytes
            self.acceptStatus = acceptStatus
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let response):
                let status = Int(response.status.code)
                if (300..<400).contains(status) { return fail(.redirected(status), context) }
                if !(200..<300).contains(status) && !acceptStatus.contains(status) { return fail(.status(status), context) }
                if let length = response.headers.first(name: "content-length").flatMap(Int.init), length > maximumBytes {
                    return fail(.tooLarge(maximumBytes), context)
                }
                head = response
            case .body(let part):
                guard head != nil else { return }
                guard body.count + part.readableBytes <= maximumBytes else { return fail(.tooLarge(maximumBytes), context) }
                body += part.readableBytesView
            case .end:
                guard let head else { return }
                promise.succeed(Response(status: Int(head.status.code), headers: head.headers, body: body))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Failure.closedEarly)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            fail(.connect("\(error)"), context)
        }

        private func fail(_ failure: Failure, _ context: ChannelHandlerContext) {
            head = nil
            promise.fail(failure)
            context.close(promise: nil)
        }
    }
}

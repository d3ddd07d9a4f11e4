import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON
import TLS

/// One request from the gateway to a URL its configuration names — an issuer's metadata, a key set, a token
/// introspection endpoint — through the gateway's own OpenSSL client (`TLSHandler`), on an event loop: nothing waits
/// for it on a thread. Redirects are refused (a configured URL is the only one ever fetched), the answer is bounded
/// in size and in time, and only `https` is spoken.
///
/// By default each fetch opens a connection of its own and closes it (key sets and metadata are fetched rarely). A
/// fetcher made with `reusingConnectionsOn:` (token introspection, asked for every new token) keeps its connections
/// alive in a pool of that event loop instead — the upstream client's (`UpstreamPool`), with its timeouts, framing and
/// reuse window — so that a lookup costs a request, not a TCP and TLS handshake.
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
        case invalidAnswer(String)
        case invalidRequest(String)

        var description: String {
            switch self {
            case .connect(let why): "cannot connect: \(why)"
            case .timedOut: "timed out"
            case .tooLarge(let bound): "the answer exceeds \(bound) bytes"
            case .redirected(let status): "redirected (\(status)); redirects are not followed"
            case .status(let status): "answered \(status)"
            case .closedEarly: "the connection closed before the answer was complete"
            case .invalidAnswer(let why): "invalid answer: \(why)"
            case .invalidRequest(let why): "the request cannot be sent: \(why)"
            }
        }
    }

    /// Where requests go: the URL's host, port, path and TLS client context (built once).
    let endpoint: UpstreamEndpoint
    /// Largest answer accepted.
    let maximumBytes: Int
    /// How long the whole exchange may take.
    let timeout: TimeAmount
    /// Kept-alive connections, for a fetcher that reuses them; nil: one connection per fetch.
    private let pool: UpstreamPool?

    /// A fetcher for `url` (https only), trusting `caFile` (nil: the system's CA bundle). With `eventLoop`, its
    /// connections are kept alive in a pool of that loop (at most `maximumConnections` open at once, half of them
    /// idle), apart from any other fetcher's: `poolKey` names whose they are (a tenant's introspection connections
    /// carry its client credentials).
    init(
        url: String, caFile: String?, maximumBytes: Int, timeout: TimeAmount = .seconds(5),
        reusingConnectionsOn eventLoop: (any EventLoop)? = nil, poolKey: String = "", maximumConnections: Int = 64,
        logger: Logger = Logger(label: "mcpgw.fetch")
    ) throws(UpstreamConfigurationError) {
        guard url.hasPrefix("https://") else { throw UpstreamConfigurationError(url: url, reason: "must be an https:// URL") }
        endpoint = try UpstreamEndpoint(UpstreamConfiguration(url: url, caFile: caFile), tenant: poolKey)
        self.maximumBytes = maximumBytes
        self.timeout = timeout
        if let eventLoop {
            var limits = GatewayLimits()
            limits.upstreamConnectTimeout = Duration.nanoseconds(timeout.nanoseconds)
            limits.maximumUpstreamConnections = maximumConnections
            pool = UpstreamPool(
                eventLoop: eventLoop, budgets: UpstreamBudgets(), statistics: UpstreamStatistics(), limits: limits, logger: logger)
        } else {
            pool = nil
        }
    }

    /// Sends one request (`GET`, or `POST` with a form body) and collects the answer on `eventLoop`. Only a `2xx`
    /// answer succeeds (with `acceptStatus`, also those statuses).
    func send(
        _ method: HTTPMethod = .GET, headers extra: [(String, String)] = [], body: [UInt8]? = nil, on eventLoop: any EventLoop,
        acceptStatus: Set<Int> = []
    ) -> EventLoopFuture<Response> {
        if let pool { return sendPooled(method, headers: extra, body: body, pool: pool, acceptStatus: acceptStatus) }
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
                if let refusal = HTTPSFetch.refusal(of: response, maximumBytes: maximumBytes, acceptStatus: acceptStatus) {
                    return fail(refusal, context)
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

    /// Why an answer with `head` is not taken (a redirect, a status not asked for, a declared length over the bound);
    /// nil when it is.
    static func refusal(of head: HTTPResponseHead, maximumBytes: Int, acceptStatus: Set<Int>) -> Failure? {
        let status = Int(head.status.code)
        if (300..<400).contains(status) { return .redirected(status) }
        if !(200..<300).contains(status) && !acceptStatus.contains(status) { return .status(status) }
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maximumBytes {
            return .tooLarge(maximumBytes)
        }
        // Values become strings the fetchers compare (`Cache-Control`): held to stream-safe text, as the gateway's own
        // framing holds every head (a key server's `Cache-Control` of 500,000 combining marks cost minutes of an event
        // loop: found by review).
        guard head.headers.allSatisfy({ StreamSafeText.isStreamSafe($0.value.unicodeScalars) }) else {
            return .invalidAnswer(
                "a header value has more than \(StreamSafeText.maximumCombiningRun) combining marks in a row (not stream-safe Unicode text)"
            )
        }
        return nil
    }
}

public import Logging
public import NIOCore
import NIOHTTP1
public import NIOPosix
public import ServiceLifecycle
import StrictJSON
public import TLS

/// The operator's listener, apart from the MCP one: `GET /healthz` (alive), `GET /readyz` (ready to serve),
/// `GET /metrics` (Prometheus text format) and `POST /reload` (what SIGHUP does, answering what changed). Bound to
/// loopback by default; with TLS settings that require client certificates, only holders of a certificate from the
/// admin CA are served.
public final class AdminListener: Sendable {
    /// The address bound (with the real port when port 0 was asked for).
    public let localAddress: SocketAddress
    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
        self.localAddress = channel.localAddress!
    }

    /// How much of the process the admin listener's clients may hold: connections (in all and per source: an IPv4
    /// address or an IPv6 /64), how long a connection may stay silent, and how long a request head may take to arrive.
    public struct Limits: Sendable {
        /// Connections open at once (more are closed at accept).
        public var maximumConnections = 64
        /// Connections one source may hold.
        public var maximumConnectionsPerSource = 16
        /// A connection with no traffic for this long is closed.
        public var idleTimeout = TimeAmount.seconds(60)
        /// A request head must arrive whole within this time from its first byte (a body, which no admin request
        /// needs, at 1 KiB/s on average after 5 s).
        public var requestHeadTimeout = TimeAmount.seconds(10)

        /// The defaults: 64 connections, 16 per source, 60 s idle, 10 s for a head.
        public init() {}
    }

    /// What `/readyz` checks and `POST /reload` does, supplied by the process that runs the gateway.
    public struct Operations: Sendable {
        /// Reloads policies, identity, TLS and the audit file; the report of what changed.
        public var reload: @Sendable () -> ReloadReport
        /// How long (seconds) after the latest attempt to reach an unreachable upstream `/readyz` may start a probe
        /// of it.
        public var upstreamProbeInterval: Double

        /// Operations from their parts.
        public init(reload: @escaping @Sendable () -> ReloadReport, upstreamProbeInterval: Double = 1) {
            self.reload = reload
            self.upstreamProbeInterval = upstreamProbeInterval
        }
    }

    /// Binds `address` (TLS when `tls` is given: each connection takes the store's current context, so a reload
    /// that replaces it applies to new connections) and serves `services`' health, readiness and metrics.
    public static func bind(
        address: ListenAddress, tls: TLSContextStore?, services: GatewayServices, operations: Operations, logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, limits: Limits = Limits()
    ) async throws -> AdminListener {
        let connections = ConnectionRegistry()
        // A reloaded trust (an operator's certificate revoked, the operator CA replaced) reaches open connections too:
        // they close once their request in progress is answered, and reconnect against the new trust.
        tls?.onReplace { [weak connections] in connections?.trustReloaded() }
        let handshakeFailureLog = LogThrottle(interval: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                // Whoever can reach the listener can open connections before any TLS work: capped in all and per
                // source, like the MCP listener's, so they cannot take the process's descriptors.
                if connections.admit(channel, maximum: limits.maximumConnections, perSource: limits.maximumConnectionsPerSource) != nil {
                    if connections.shouldLogRefusal() {
                        logger.warning(
                            "admin connection refused: the admin listener holds its connections",
                            metadata: ["peer.address": "\(channel.remoteAddress?.hostAndPort ?? "unknown")"])
                    }
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls {
                        try pipeline.addHandler(
                            TLSHandler(context: tls.current, logger: logger, admitsFailureLog: { handshakeFailureLog.admit($0) }))
                    }
                    let deadlines = ClientDeadlines(
                        idleTimeout: limits.idleTimeout, headTimeout: limits.requestHeadTimeout, minimumBytesPerSecond: 1024,
                        gracePeriod: .seconds(5))
                    try pipeline.addHandler(deadlines)
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(
                        AdminHandler(
                            services: services, operations: operations, plainHTTPHost: tls == nil ? address.host : nil,
                            deadlines: deadlines))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: address.host, port: address.port).get()
        } catch {
            throw GatewayError.cannotListen(address, reason: "admin listener: \(error)")
        }
        logger.info("admin listener ready", metadata: ["admin.address": "\(channel.localAddress!)", "tls": "\(tls != nil)"])
        return AdminListener(channel: channel)
    }

    /// Stops accepting connections.
    public func close() async throws { try await channel.close() }

    /// Readiness, as `/readyz` reports it: each check and whether the gateway is ready, at `now` (monotonic seconds).
    ///
    /// Upstreams the gateway cannot reach (their latest connect, or a tenant's latest TLS handshake with them, failed:
    /// `UpstreamClient.unreachableUpstreams`) are listed, with the tenants they serve; they make the gateway not ready
    /// only when no tenant's upstream can be reached, so one tenant's broken upstream cannot take a shared gateway out
    /// of its load balancer. A slow or failed call is not a sign of an unreachable upstream: it was reached.
    static func readiness(
        _ services: GatewayServices, now: Double = GatewayMetrics.monotonicSeconds()
    ) -> (
        ready: Bool, body: JSONValue
    ) {
        let policies = !services.policy.snapshot.tenants.isEmpty
        let audit = services.audit.isAccepting
        let unreachable = services.upstream.unreachableUpstreams()
        let withUpstreams = services.upstream.tenants
        let noneServed = !withUpstreams.isEmpty && withUpstreams.isSubset(of: unreachable.keys)
        let ready = policies && audit && !noneServed
        // One entry per upstream and failure (tenants whose handshakes failed alike are named together).
        var upstreams: [UnreachableUpstream: [String]] = [:]
        for (tenant, upstream) in unreachable { upstreams[upstream, default: []].append(tenant) }
        let entries = upstreams.sorted { ($0.key.upstream, $0.key.error) < ($1.key.upstream, $1.key.error) }.map {
            upstream, tenants in
            JSONValue.object(
                JSONObject([
                    .init(key: "upstream", value: .string(upstream.upstream)),
                    .init(key: "tenants", value: .array(tenants.sorted().map(JSONValue.string))),
                    .init(key: "error", value: .string(upstream.error)),
                    .init(key: "for_seconds", value: .number(JSONNumber(Int64(max(0, now - upstream.since))))),
                ]))
        }
        let body = JSONValue.object(
            JSONObject([
                .init(key: "ready", value: .bool(ready)),
                .init(
                    key: "checks",
                    value: .object(
                        JSONObject([
                            .init(key: "policies_loaded", value: .bool(policies)),
                            .init(key: "audit_writable", value: .bool(audit)),
                            .init(key: "upstreams_failing", value: .array(unreachable.keys.sorted().map(JSONValue.string))),
                            .init(key: "upstreams_unreachable", value: .array(entries)),
                        ]))),
            ]))
        return (ready, body)
    }
}

/// Answers one admin request at a time (bodies are not read: none of these takes one).
private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let services: GatewayServices
    let operations: AdminListener.Operations
    /// Without TLS, the listen address's host: the only name (besides IP literals and `localhost`) a request may
    /// give in `Host`. A web page that rebinds its own name to this address cannot read the answers then.
    let plainHTTPHost: String?
    var head: HTTPRequestHead?

    /// Reloads run one at a time on a thread of their own: never beside each other (an older snapshot swapped in after
    /// a newer one), and never on the shared pool that verifies fresh tokens.
    static let reloads: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    /// The connection's idle and request-head deadlines.
    let deadlines: ClientDeadlines

    init(services: GatewayServices, operations: AdminListener.Operations, plainHTTPHost: String?, deadlines: ClientDeadlines) {
        self.services = services
        self.operations = operations
        self.plainHTTPHost = plainHTTPHost
        self.deadlines = deadlines
    }

    /// Whether a request is being answered (from its head until its answer is written).
    private var answering = false
    /// Set when the TLS trust was reloaded during a request: the connection closes after its answer.
    private var closesAfterAnswer = false

    /// A request the HTTP parser refused: NIO's error handler has written the `400` (with `Connection: close`) and
    /// leaves closing to the pipeline. Found by review: nothing closed, and the socket held a slot until the head deadline.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// A connection silent for the idle timeout, or whose request head took longer than its deadline, is closed; so is
    /// one open when the TLS trust is reloaded (after the request it is answering, if any: it was verified against the
    /// old trust).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ConnectionIdle || event is SlowClientDetected { return context.close(promise: nil) }
        if event is TrustReloaded {
            if answering { closesAfterAnswer = true } else { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Whether the request's target and header values are stream-safe text (`StreamSafeText`).
    static func isStreamSafe(_ head: HTTPRequestHead) -> Bool {
        StreamSafeText.isStreamSafe(head.uri.unicodeScalars)
            && head.headers.allSatisfy { StreamSafeText.isStreamSafe($0.value.unicodeScalars) }
    }

    /// Why a request is not for this listener: sent by a browser (it carries `Origin`: a page's cross-site POST, or a
    /// read after DNS rebinding), or, without TLS, naming a host that is not this listener's.
    func foreignRequestProblem(_ head: HTTPRequestHead) -> String? {
        if head.headers.contains(name: "origin") { return "the admin listener does not serve browsers (Origin present)" }
        let hosts = head.headers["host"]
        // HTTP/1.1 requires exactly one Host (RFC 9112 §3.2); two could be read differently here and by a proxy.
        if hosts.count > 1 || (hosts.isEmpty && (head.version.major > 1 || head.version.minor >= 1)) {
            return "exactly one Host header is required"
        }
        guard let listen = plainHTTPHost, let host = hosts.first else { return nil }
        var name = Substring(host)
        var bracketed = false
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return "Host '\(host.prefix(100))' has an unclosed bracket" }
            let after = name[name.index(after: close)...]
            guard after.isEmpty || (after.first == ":" && after.dropFirst().allSatisfy({ $0.isASCII && $0.isNumber })) else {
                return "Host '\(host.prefix(100))' has a malformed port"
            }
            name = name[name.index(after: name.startIndex)..<close]
            bracketed = true
        } else if let colon = name.lastIndex(of: ":") {
            guard name[name.index(after: colon)...].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                return "Host '\(host.prefix(100))' has a malformed port"
            }
            name = name[..<colon]
        }
        let lowered = name.lowercased()
        // A colon belongs only to a bracketed IPv6 literal; an unbracketed name with one (`evil.example:1:2`) is none.
        let isIPAddress =
            !lowered.isEmpty
            && (bracketed
                ? lowered.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
                : lowered.allSatisfy { ($0.isASCII && $0.isNumber) || $0 == "." })
        if isIPAddress || lowered == "localhost" || lowered == listen.lowercased() { return nil }
        return "Host '\(host.prefix(100))' is not this listener (use its address)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
            answering = true
            // No admin request needs a body; one that comes is read (and dropped) at a minimum rate, or cut.
            deadlines.headReceived(
                expectsBody: request.headers.contains(name: "transfer-encoding")
                    || (request.headers.first(name: "content-length").flatMap { Int($0) } ?? 0) > 0)
        case .body(let part): deadlines.bodyBytesReceived(part.readableBytes)
        case .end:
            guard let head else { return }
            self.head = nil
            deadlines.bodyReceived()
            route(head, context)
        }
    }

    private func route(_ head: HTTPRequestHead, _ context: ChannelHandlerContext) {
        // The target and values become strings compared below: held to stream-safe text, as the gateway's own framing
        // holds every request (a `Host` of 40,000 combining marks cost seconds of this event loop: found by review).
        guard Self.isStreamSafe(head) else {
            let problem = "the target or a header value has more than \(StreamSafeText.maximumCombiningRun) combining marks in a row"
            return respond(
                context, head, .badRequest, json: JSONValue.object(JSONObject([.init(key: "error", value: .string(problem))])).serialized)
        }
        if let problem = foreignRequestProblem(head) {
            return respond(
                context, head, .forbidden, json: JSONValue.object(JSONObject([.init(key: "error", value: .string(problem))])).serialized)
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let allowed: HTTPMethod = path == "/reload" ? .POST : .GET
        let known = ["/healthz", "/readyz", "/metrics", "/reload"].contains(path)
        guard known else { return respond(context, head, .notFound, json: #"{"error":"not found"}"#) }
        guard head.method == allowed || (allowed == .GET && head.method == .HEAD) else {
            return respond(
                context, head, .methodNotAllowed, json: #"{"error":"method not allowed"}"#, extra: [("Allow", allowed.rawValue)])
        }
        switch path {
        case "/healthz":
            respond(context, head, .ok, json: #"{"status":"ok"}"#)
        case "/readyz":
            let (ready, body) = AdminListener.readiness(services)
            // What this answer found unreachable is tried again now, so that the next check sees an upstream that
            // came back, even with no call sent to it (the gateway is out of its load balancer meanwhile).
            services.upstream.probeUnreachable(on: context.eventLoop, interval: operations.upstreamProbeInterval)
            respond(context, head, ready ? .ok : .serviceUnavailable, json: body.serialized)
        case "/metrics":
            let text = services.metrics.render(services: services)
            respond(context, head, .ok, body: text, contentType: "text/plain; version=0.0.4; charset=utf-8")
        default:
            // Reading files and building contexts takes time: off the event loop.
            let reload = operations.reload
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            Self.reloads.runIfActive(eventLoop: loop) { reload() }.whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let report):
                    handler.respond(context, head, report.succeeded ? .ok : .internalServerError, json: report.json.serialized)
                case .failure(let error):
                    handler.respond(context, head, .serviceUnavailable, json: #"{"error":"reload not run: \#(error)"}"#)
                }
            }
        }
    }

    private func respond(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, json: String,
        extra: [(String, String)] = []
    ) {
        respond(context, request, status, body: Array(json.utf8), contentType: "application/json", extra: extra)
    }

    private func respond(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, body: [UInt8],
        contentType: String, extra: [(String, String)] = []
    ) {
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", String(body.count)), ("Cache-Control", "no-store")])
        for (name, value) in extra { headers.add(name: name, value: value) }
        // A client that asked for the connection to close (or an HTTP/1.0 one that did not ask to keep it) gets
        // `Connection: close`, and the connection closes once the answer is written.
        let keepAlive = request.isKeepAlive && !closesAfterAnswer
        answering = false
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let ended = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        deadlines.exchangeFinished()
        if !keepAlive {
            let channel = context.channel
            ended.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// The admin listener as a swift-service-lifecycle `Service`: binds in `run()`, closes on graceful shutdown.
public struct AdminService: Service {
    let address: ListenAddress
    let tls: TLSContextStore?
    let services: GatewayServices
    let operations: AdminListener.Operations
    let limits: AdminListener.Limits
    let logger: Logger

    /// An admin listener on `address` (TLS when `tls` is given) for `services`, within `limits`.
    public init(
        address: ListenAddress, tls: TLSContextStore?, services: GatewayServices, operations: AdminListener.Operations,
        limits: AdminListener.Limits = .init(), logger: Logger
    ) {
        self.address = address
        self.tls = tls
        self.services = services
        self.operations = operations
        self.limits = limits
        self.logger = logger
    }

    public func run() async throws {
        let listener = try await AdminListener.bind(
            address: address, tls: tls, services: services, operations: operations, logger: logger, limits: limits)
        try? await gracefulShutdown()
        try await listener.close()
    }
}

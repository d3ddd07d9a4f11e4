import NIOCore
import NIOHTTP1

extension HTTPSFetch {
    /// `send` for a fetcher that keeps its connections alive: the request goes out on an idle connection of `pool` when
    /// there is one, else on a new one (within the fetcher's connection bound).
    func sendPooled(
        _ method: HTTPMethod, headers extra: [(String, String)], body: [UInt8]?, pool: UpstreamPool, acceptStatus: Set<Int>
    ) -> EventLoopFuture<Response> {
        let promise = pool.eventLoop.makePromise(of: Response.self)
        var request: UpstreamRequest
        do {
            request = try UpstreamRequest(method: method, target: endpoint.path, allocator: ByteBufferAllocator())
            try request.add(name: "Host", value: endpoint.hostHeader)
            try request.add(name: "Accept", value: "application/json")
            for (name, value) in extra { try request.add(name: name, value: value) }
        } catch {
            promise.fail(Failure.invalidRequest("\(error)"))
            return promise.futureResult
        }
        request.finish(body: body.map { ByteBuffer(bytes: $0) })
        let finished = request
        let exchange: @Sendable () -> Void = { [endpoint, maximumBytes, timeout] in
            PooledExchange(
                request: finished, endpoint: endpoint, pool: pool, promise: promise, maximumBytes: maximumBytes,
                acceptStatus: acceptStatus, timeout: timeout
            ).start()
        }
        if pool.eventLoop.inEventLoop { exchange() } else { pool.eventLoop.execute(exchange) }
        return promise.futureResult
    }

    /// The fetcher's failure for an upstream connection's.
    static func failure(_ failure: UpstreamFailure) -> Failure {
        switch failure {
        case .connect(let why): .connect(why)
        case .headTimeout, .idleTimeout: .timedOut
        case .closed: .closedEarly
        case .protocolError(let why): .invalidAnswer(why)
        case .connectionBudget: .connect("too many connections to the endpoint are open")
        }
    }
}

/// One request of a connection-reusing fetcher, on its pool's event loop: sent, its answer collected (bounded), the
/// whole within the fetcher's timeout. A kept-alive connection that failed before any answer — closed by the server,
/// cleanly or not, or reset (it may have been closing as the request went out) — is retried once on a new connection,
/// never another idle one: the gateway fetches only what is safe to ask twice (token introspection reads the token's
/// state).
private final class PooledExchange: UpstreamResponseReceiver {
    private let request: UpstreamRequest
    private let endpoint: UpstreamEndpoint
    private let pool: UpstreamPool
    private let promise: EventLoopPromise<HTTPSFetch.Response>
    private let maximumBytes: Int
    private let acceptStatus: Set<Int>
    private let timeout: TimeAmount
    private var connection: UpstreamConnection?
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    /// Whether the connection in use was taken idle from the pool (rather than opened for this request).
    private var reused = false
    private var retried = false
    private var finished = false
    private var timer: Scheduled<Void>?

    init(
        request: UpstreamRequest, endpoint: UpstreamEndpoint, pool: UpstreamPool, promise: EventLoopPromise<HTTPSFetch.Response>,
        maximumBytes: Int, acceptStatus: Set<Int>, timeout: TimeAmount
    ) {
        self.request = request
        self.endpoint = endpoint
        self.pool = pool
        self.promise = promise
        self.maximumBytes = maximumBytes
        self.acceptStatus = acceptStatus
        self.timeout = timeout
    }

    /// Starts the exchange (on the pool's loop); it keeps itself alive until it has finished.
    func start() {
        timer = pool.eventLoop.assumeIsolated().scheduleTask(in: timeout) { self.finish(.failure(HTTPSFetch.Failure.timedOut)) }
        attempt()
    }

    private func attempt() {
        if !retried, let idle = pool.idleConnection(endpoint) {
            reused = true
            return send(on: idle)
        }
        reused = false
        pool.acquire(endpoint, reusingIdle: false) { result in
            switch result {
            case .success(let connection): self.send(on: connection)
            case .failure(let failure): self.finish(.failure(HTTPSFetch.failure(failure)))
            }
        }
    }

    private func send(on connection: UpstreamConnection) {
        // Timed out while connecting: the new connection is idle and goes to the pool for the next request.
        guard !finished else { return pool.release(connection) }
        self.connection = connection
        connection.send(request, to: self, headTimeout: timeout, idleTimeout: timeout)
    }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        if let refusal = HTTPSFetch.refusal(of: head, maximumBytes: maximumBytes, acceptStatus: acceptStatus) {
            return finish(.failure(refusal))
        }
        self.head = head
    }

    func upstreamResponseBody(_ part: ByteBuffer) {
        guard body.count + part.readableBytes <= maximumBytes else { return finish(.failure(HTTPSFetch.Failure.tooLarge(maximumBytes))) }
        body += part.readableBytesView
    }

    func upstreamResponseEnd() {
        // The connection is done with this exchange (and goes back to its pool): nothing to cancel.
        connection = nil
        guard let head else { return }
        finish(.success(HTTPSFetch.Response(status: Int(head.status.code), headers: head.headers, body: body)))
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        connection = nil
        // Found by review: only a clean close was retried, and a server that drops idle connections without TLS's
        // close_notify (or resets them) failed the lookup.
        if reused, head == nil, !retried, !finished, failure.mayBeAStaleConnection {
            retried = true
            return attempt()
        }
        finish(.failure(HTTPSFetch.failure(failure)))
    }

    func upstreamReadComplete() {}

    /// Completes the exchange once; a connection still carrying it is closed (its answer is unfinished).
    private func finish(_ result: Result<HTTPSFetch.Response, any Error>) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        if let connection {
            self.connection = nil
            connection.cancel(for: self)
        }
        promise.completeWith(result)
    }
}

extension UpstreamFailure {
    /// Whether a reused connection that failed so before any answer may just have been closing as the request went
    /// out: closed (cleanly or not) or reset, or anything it read was not HTTP.
    fileprivate var mayBeAStaleConnection: Bool {
        switch self {
        case .closed, .protocolError: true
        case .connect, .headTimeout, .idleTimeout, .connectionBudget: false
        }
    }
}

import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import Gateway

/// Answers a host name with fixed addresses: the refusing one first, then the upstream's.
private struct TwoAddresses: Resolver, Sendable {
    let addresses: [SocketAddress]
    let loop: any EventLoop
    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> { loop.makeSucceededFuture(addresses) }
    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> { loop.makeSucceededFuture([]) }
    func cancelQueries() {}
}

/// Collects one upstream response.
private final class ResponseCollector: UpstreamResponseReceiver {
    let done: EventLoopPromise<(status: Int, body: String)>
    private var status = 0
    private var body = ""
    init(_ done: EventLoopPromise<(status: Int, body: String)>) { self.done = done }
    func upstreamResponseHead(_ head: HTTPResponseHead) { status = Int(head.status.code) }
    func upstreamResponseBody(_ part: ByteBuffer) { body += String(buffer: part) }
    func upstreamResponseEnd() { done.succeed((status, body)) }
    func upstreamFailed(_ failure: UpstreamFailure) { done.fail(failure) }
    func upstreamReadComplete() {}
}

@Suite("Upstream pool")
struct UpstreamPoolTests {
    /// A port nothing listens on (a listener opened and closed): connecting to it is refused at once.
    private func refusingPort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }

    /// One request through `pool` on its loop.
    private func call(_ pool: UpstreamPool, _ endpoint: UpstreamEndpoint, id: Int) async throws -> (status: Int, body: String) {
        let loop = pool.eventLoop
        return try await loop.flatSubmit {
            let done = loop.makePromise(of: (status: Int, body: String).self)
            pool.acquire(endpoint) { result in
                switch result {
                case .failure(let failure): done.fail(failure)
                case .success(let connection):
                    var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/mcp")
                    head.headers.add(name: "Host", value: "upstream.test")
                    head.headers.add(name: "Content-Type", value: "application/json")
                    let body = ByteBuffer(string: RPC.call("read_file", #"{"path":"a.txt"}"#, id: id))
                    head.headers.add(name: "Content-Length", value: "\(body.readableBytes)")
                    connection.send(
                        head, body: body, to: ResponseCollector(done), headTimeout: .seconds(5), idleTimeout: .seconds(5))
                }
            }
            return done.futureResult
        }.get()
    }

    @Test("a host name with several addresses: the connection that wins has handlers of its own, and carries requests")
    func severalAddresses() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let upstreamPort = try #require(upstream.channel.localAddress?.port)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let addresses = [
            try SocketAddress(ipAddress: "127.0.0.1", port: try await refusingPort()),
            try SocketAddress(ipAddress: "127.0.0.1", port: upstreamPort),
        ]
        let pool = UpstreamPool(
            eventLoop: loop, budgets: UpstreamBudgets(), statistics: UpstreamStatistics(), limits: GatewayLimits(),
            logger: Logger(label: "test.upstream-pool"), resolver: TwoAddresses(addresses: addresses, loop: loop))
        let endpoint = try UpstreamEndpoint(UpstreamConfiguration(url: "http://upstream.test:\(upstreamPort)/mcp"))
        // The refused attempt's handlers are removed on a later turn of the loop, after the winner's were added;
        // handlers shared between the two would leave the winner with a stopped response parser.
        for id in 1...3 {
            let response = try await call(pool, endpoint, id: id)
            #expect(response.status == 200)
            #expect(response.body.contains(#""id":\#(id)"#), "\(response.body)")
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(upstream.received.count == 3)
        await upstream.stop()
    }
}

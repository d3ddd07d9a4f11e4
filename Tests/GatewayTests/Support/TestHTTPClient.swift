import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TLS
import TestSupport

/// A minimal HTTPS client over mcpgw's own TLS module (client mode), for end-to-end tests: one request per
/// connection, body chunks time-stamped as they arrive.
struct TestHTTPClient {
    struct Response: Sendable {
        let status: Int
        let headers: [(String, String)]
        let chunks: [(ContinuousClock.Instant, String)]
        var body: String { chunks.map(\.1).joined() }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let state = NIOLockedValueBox<(status: Int, headers: [(String, String)], chunks: [(ContinuousClock.Instant, String)])>((0, [], []))
        let done: EventLoopPromise<Void>
        let firstChunk: EventLoopPromise<Void>
        init(done: EventLoopPromise<Void>, firstChunk: EventLoopPromise<Void>) {
            self.done = done
            self.firstChunk = firstChunk
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                state.withLockedValue {
                    $0.status = Int(head.status.code); $0.headers = head.headers.map { ($0.name, $0.value) }
                }
            case .body(let buffer):
                state.withLockedValue { $0.chunks.append((.now, String(buffer: buffer))) }
                firstChunk.succeed(())
            case .end:
                firstChunk.succeed(())
                done.succeed(())
            }
        }
        func channelInactive(context: ChannelHandlerContext) {
            firstChunk.succeed(())
            done.succeed(())
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            firstChunk.succeed(())
            done.succeed(())
            context.close(promise: nil)
        }
    }

    /// `agent` is a certs-dev path such as `acme/agents/bot1`, or nil for no client certificate.
    let port: Int
    var agent: String?

    /// Sends one request and waits (bounded) for the whole response; `onFirstChunk` runs when the first body
    /// bytes arrive.
    func send(
        _ method: HTTPMethod = .POST, path: String = "/mcp", body: String? = nil, headers: [(String, String)] = [],
        timeout: Duration = .seconds(20), onFirstChunk: (@Sendable () async -> Void)? = nil
    ) async throws -> Response {
        var configuration = TLSConfiguration(
            trustedCABundles: [.init(label: "gateway", path: DevPKI.gatewayCA)])
        if let agent {
            configuration.certificateChainFile = DevPKI.path(agent + ".pem")
            configuration.privateKeyFile = DevPKI.path(agent + ".key")
        }
        let context = try TLSContext(role: .client, configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let done = loop.makePromise(of: Void.self)
        let first = loop.makePromise(of: Void.self)
        let collector = Collector(done: done, firstChunk: first)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            TLSHandler(context: context, serverHostname: "localhost", logger: Logger(label: "test-client")))
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(collector)
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
        } catch {
            // No connection: complete the promises (NIO refuses to let a promise leak) and report the failure.
            done.succeed(())
            first.succeed(())
            throw error
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: "localhost:\(port)")
        if body != nil {
            // A Content-Type among `headers` replaces the default one.
            if !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
                head.headers.add(name: "Content-Type", value: "application/json")
            }
            head.headers.add(name: "Accept", value: "application/json, text/event-stream")
        }
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        let bytes = ByteBuffer(string: body ?? "")
        head.headers.replaceOrAdd(name: "Content-Length", value: String(bytes.readableBytes))
        head.headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if body != nil { channel.write(HTTPClientRequestPart.body(.byteBuffer(bytes)), promise: nil) }
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        let timer = loop.scheduleTask(in: .nanoseconds(timeout.components.seconds * 1_000_000_000)) {
            channel.close(promise: nil)
        }
        if let onFirstChunk {
            try await first.futureResult.get()
            await onFirstChunk()
        }
        try await done.futureResult.get()
        timer.cancel()
        try? await channel.close()
        let state = collector.state.withLockedValue { $0 }
        return Response(status: state.status, headers: state.headers, chunks: state.chunks)
    }
}

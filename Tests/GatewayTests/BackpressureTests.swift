import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TestSupport
import Testing

@testable import Gateway

/// Backpressure through the gateway's own pipeline (TLS → slow-client guard → HTTP → the MCP handler → the upstream
/// client): a client that stops reading a large stream stops the upstream's writes, with a bounded amount in between;
/// when it reads again, every byte arrives.
@Suite("Backpressure through the gateway's pipeline", .serialized)
struct BackpressureTests {
    /// An upstream that answers a GET with an SSE stream of `total` bytes, written as fast as its socket takes them,
    /// and counts what it has handed to the kernel.
    final class StreamingUpstream: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let total: Int
        let written = NIOLockedValueBox(0)
        /// Bytes handed to the channel (written or still in flight), and whether the end was sent: what bounds the
        /// writes, so that writability changes while writes are in flight never write past the total.
        let scheduled = NIOLockedValueBox(0)
        let ended = NIOLockedValueBox(false)
        let isPost = NIOLockedValueBox(false)
        static let event: [UInt8] = Array(("data: \"" + String(repeating: "x", count: 64 * 1024 - 11) + "\"\n\n").utf8)

        init(total: Int) { self.total = total }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let part = unwrapInboundIn(data)
            if case .head(let request) = part { isPost.withLockedValue { $0 = request.method == .POST } }
            guard case .end = part else { return }
            if isPost.withLockedValue({ $0 }) {
                // A small JSON answer (the client's first call, which completes its TLS handshake).
                let body = #"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#
                let head = HTTPResponseHead(
                    version: .http1_1, status: .ok,
                    headers: ["Content-Type": "application/json", "Content-Length": String(body.utf8.count)])
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            let head = HTTPResponseHead(
                version: .http1_1, status: .ok, headers: ["Content-Type": "text/event-stream", "Content-Length": String(total)])
            context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
            writeMore(context: context)
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            writeMore(context: context)
            context.fireChannelWritabilityChanged()
        }

        private func writeMore(context: ChannelHandlerContext) {
            while context.channel.isWritable && scheduled.withLockedValue({ $0 }) < total {
                let buffer = context.channel.allocator.buffer(bytes: Self.event)
                let promise = context.eventLoop.makePromise(of: Void.self)
                let counter = written
                promise.futureResult.whenSuccess { counter.withLockedValue { $0 += Self.event.count } }
                // Counted as written when the socket took it; as scheduled now, so the loop stops at the total.
                scheduled.withLockedValue { $0 += Self.event.count }
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: promise)
            }
            let finish =
                scheduled.withLockedValue { $0 } >= total
                && !ended.withLockedValue { ended in
                    defer { ended = true }; return ended
                }
            if finish { context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil) }
        }
    }

    @Test("a client that stops reading a 64 MiB stream stops the upstream within a bounded amount, and gets it all when it reads again")
    func slowReader() async throws {
        let total = 1024 * StreamingUpstream.event.count  // 64 MiB
        let handler = StreamingUpstream(total: total)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let gateway = try await GatewayFixture.start(upstream: "http://127.0.0.1:\(server.localAddress!.port!)/mcp")
        let client = try await RawTLSClient.connect(port: gateway.port)
        try await client.send(RawTLSClient.post(RPC.call("read_file", #"{"path":"a.txt"}"#, id: 1)))
        #expect(await client.wait { $0.contains(#""result""#) })
        try await client.setReading(false)
        try await client.send("GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        // Wait until the upstream's writes stall: the amount written stops growing.
        var previous = -1
        var stable = 0
        let deadline = ContinuousClock.now + .seconds(20)
        while stable < 5 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            let now = handler.written.withLockedValue { $0 }
            stable = now == previous ? stable + 1 : 0
            previous = now
        }
        let stalled = handler.written.withLockedValue { $0 }
        #expect(stable >= 5, "the upstream never stopped writing")
        // In between: the kernel's socket buffers (upstream → gateway, gateway → client) and what the gateway holds,
        // one event at most per connection. Far less than the stream.
        #expect(stalled < 24 * 1024 * 1024, "\(stalled) bytes left the upstream while the client read nothing")
        try await client.setReading(true)
        // 64 MiB through a debug build's TLS and SSE filter: seconds alone, over a minute on a CI machine running every
        // other suite beside it (30 s were too few there).
        #expect(await client.wait(timeout: .seconds(120)) { _ in client.receivedCount > total })
        #expect(handler.written.withLockedValue { $0 } == total)
        await client.close()
        try await gateway.stop()
        try await server.close()
    }
}

import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Gateway

@Suite("Upstream request encoder")
struct UpstreamRequestEncoderTests {
    private func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(UpstreamRequestEncoder())
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
        return channel
    }

    private func requestHead(_ method: HTTPMethod = .POST, headers: [(String, String)]) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: "/mcp", headers: HTTPHeaders(headers))
    }

    private func outbound(_ channel: EmbeddedChannel) throws -> [String] {
        var written: [String] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written.append(String(buffer: buffer)) }
        return written
    }

    @Test("head and body leave as one buffer, with the headers as given")
    func oneWrite() throws {
        let channel = try channel()
        let body = #"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        let sent = channel.eventLoop.makePromise(of: Void.self)
        channel.write(
            HTTPClientRequestPart.head(requestHead(headers: [("Host", "up:80"), ("Content-Length", "\(body.utf8.count)")])), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: sent)
        #expect(try outbound(channel) == ["POST /mcp HTTP/1.1\r\nHost: up:80\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"])
        try sent.futureResult.wait()
        _ = try channel.finish()
    }

    @Test("a request without a body is its head alone; a large body is a buffer of its own")
    func shapes() throws {
        let channel = try channel()
        channel.write(HTTPClientRequestPart.head(requestHead(.GET, headers: [("Accept", "text/event-stream")])), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        #expect(try outbound(channel) == ["GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n"])
        let large = String(repeating: "x", count: UpstreamRequestEncoder.coalescedBodyBytes + 1)
        channel.write(HTTPClientRequestPart.head(requestHead(headers: [("Content-Length", "\(large.utf8.count)")])), promise: nil)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: large))), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        #expect(try outbound(channel) == ["POST /mcp HTTP/1.1\r\nContent-Length: \(large.utf8.count)\r\n\r\n", large])
        _ = try channel.finish()
    }

    /// Whether `promise` has already failed with an encoding error (never waits: an embedded channel's writes
    /// complete only when flushed).
    private static func failed(_ promise: EventLoopPromise<Void>) -> Bool {
        var failure: (any Error)?
        promise.futureResult.assumeIsolated().whenFailure { failure = $0 }
        return failure is UpstreamRequestEncoder.EncodingError
    }

    @Test(
        "CR, LF or NUL in a header or the target never reach the upstream",
        arguments: [
            ("X-Test", "a\r\nInjected: yes"), ("X-Test", "a\nb"), ("X-Te\rst", "a"), ("X-Test", "a\u{0}b"),
        ])
    func injection(name: String, value: String) throws {
        let channel = try channel()
        let sent = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPClientRequestPart.head(requestHead(headers: [(name, value)])), promise: sent)
        #expect(Self.failed(sent))
        // The body and end of the refused request are refused too: nothing is written without its head.
        let body = channel.eventLoop.makePromise(of: Void.self)
        channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "smuggled"))), promise: body)
        #expect(Self.failed(body))
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        #expect(try outbound(channel).isEmpty)
        #expect(throws: UpstreamRequestEncoder.EncodingError.self) { try channel.throwIfErrorCaught() }
        _ = try? channel.finish()
    }

    @Test("the response decoder still learns the method: the answer to HEAD has no body")
    func headResponse() throws {
        let channel = try channel()
        channel.write(HTTPClientRequestPart.head(requestHead(.HEAD, headers: [])), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        _ = try outbound(channel)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
        guard case .head(let response) = try #require(try channel.readInbound(as: HTTPClientResponsePart.self)) else {
            Issue.record("no head")
            return
        }
        #expect(response.status == .ok)
        guard case .end = try #require(try channel.readInbound(as: HTTPClientResponsePart.self)) else {
            Issue.record("a body was expected to be skipped")
            return
        }
        _ = try channel.finish()
    }
}

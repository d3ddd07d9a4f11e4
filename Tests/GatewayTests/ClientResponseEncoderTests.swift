import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Gateway

@Suite("Client response encoder")
struct ClientResponseEncoderTests {
    private func channel(_ encoder: ClientResponseEncoder = ClientResponseEncoder(datesResponses: false)) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(EncodingStep(encoder))
        // NIO's pipeline description (printed for an unhandled error) traps when no handler is inbound.
        try channel.pipeline.syncOperations.addHandler(InboundTail())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private final class InboundTail: ChannelInboundHandler {
        typealias InboundIn = Never
    }

    /// Drives the encoder as the connection handler does (its `write`, `flush` and `close`), from a handler of its own,
    /// so that response parts can be written to an embedded channel; a refusal goes up the pipeline.
    private final class EncodingStep: ChannelOutboundHandler {
        typealias OutboundIn = HTTPServerResponsePart
        typealias OutboundOut = ByteBuffer
        let encoder: ClientResponseEncoder

        init(_ encoder: ClientResponseEncoder) { self.encoder = encoder }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            encoder.write(unwrapOutboundIn(data), promise: promise, context: context) { context.fireErrorCaught($0) }
        }

        func flush(context: ChannelHandlerContext) { encoder.flush(context: context) }

        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            encoder.close(context: context, mode: mode, promise: promise)
        }

        func handlerRemoved(context: ChannelHandlerContext) { encoder.dropPending() }
    }

    private func head(
        _ status: HTTPResponseStatus, _ headers: [(String, String)], version: HTTPVersion = .http1_1
    ) -> HTTPServerResponsePart {
        .head(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(headers)))
    }

    private func body(_ text: String) -> HTTPServerResponsePart { .body(.byteBuffer(ByteBuffer(string: text))) }

    private func outbound(_ channel: EmbeddedChannel) throws -> [String] {
        var written: [String] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written.append(String(buffer: buffer)) }
        return written
    }

    /// Whether `promise` has already failed with an encoding error (never waits: an embedded channel's writes
    /// complete only when flushed).
    private static func failed(_ promise: EventLoopPromise<Void>) -> Bool {
        var failure: (any Error)?
        promise.futureResult.assumeIsolated().whenFailure { failure = $0 }
        return failure is ClientResponseEncoder.EncodingError
    }

    @Test("every final head carries one Date (RFC 9110 6.6.1): the gateway's own, or one the head already has")
    func dated() throws {
        let channel = try channel(ClientResponseEncoder())
        channel.write(head(.ok, [("Content-Length", "0")]), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.write(head(.ok, [("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Content-Length", "0")]), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.flush()
        let text = try outbound(channel).joined()
        let dates = text.split(separator: "\r\n").filter { $0.hasPrefix("Date: ") }
        #expect(dates.count == 2, "\(text)")
        #expect(dates.last == "Date: Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(
            String(dates.first ?? "").wholeMatch(of: /Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT/)
                != nil)
        #expect(HTTPDate.field(for: 784_111_777) == Array("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n".utf8))
    }

    @Test("head, body and end leave as one buffer; the end's promise completes when it is written")
    func oneWrite() throws {
        let channel = try channel()
        let answer = #"{"jsonrpc":"2.0","id":1,"result":{}}"#
        let ended = channel.eventLoop.makePromise(of: Void.self)
        var done = false
        ended.futureResult.assumeIsolated().whenSuccess { done = true }
        channel.write(head(.ok, [("Content-Type", "application/json"), ("Content-Length", "\(answer.utf8.count)")]), promise: nil)
        channel.write(body(answer), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: ended)
        #expect(!done)
        channel.flush()
        #expect(
            try outbound(channel) == [
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(answer.utf8.count)\r\n\r\n\(answer)"
            ])
        #expect(done)
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test("without a Content-Length an HTTP/1.1 body is chunked, and a large part is a buffer of its own")
    func chunked() throws {
        let channel = try channel()
        channel.write(head(.ok, [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "gzip")]), promise: nil)
        channel.write(body("data: 1\n\n"), promise: nil)
        channel.writeAndFlush(body(""), promise: nil)
        #expect(
            try outbound(channel) == [
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"
            ])
        let large = String(repeating: "x", count: ClientResponseEncoder.coalescedBodyBytes + 1)
        channel.write(body(large), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        #expect(try outbound(channel) == [String(large.utf8.count, radix: 16) + "\r\n", large, "\r\n0\r\n\r\n"])
        _ = try channel.finish()
    }

    @Test("an HTTP/1.0 answer without a Content-Length is delimited by the close, not chunked")
    func http10() throws {
        let channel = try channel()
        channel.write(head(.ok, [("Connection", "close")], version: .http1_0), promise: nil)
        channel.write(body("abc"), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        #expect(try outbound(channel) == ["HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nabc"])
        _ = try channel.finish()
    }

    @Test("1xx, 204 and 304 heads lose their framing headers, and a body after them closes the connection unwritten")
    func noBody() throws {
        for status in [HTTPResponseStatus.noContent, .notModified, .continue] {
            let channel = try channel()
            channel.write(head(status, [("Content-Length", "9"), ("Transfer-Encoding", "chunked"), ("Mcp-Session-Id", "s")]), promise: nil)
            let stray = channel.eventLoop.makePromise(of: Void.self)
            channel.write(body("HTTP/1.1 200 OK\r\n\r\nforged"), promise: stray)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
            #expect(Self.failed(stray))
            #expect(try outbound(channel).isEmpty)
            #expect(!channel.isActive)
            _ = try? channel.finish()
        }
        let channel = try channel()
        channel.write(head(.noContent, [("Content-Length", "0"), ("Mcp-Session-Id", "s")]), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        #expect(try outbound(channel) == ["HTTP/1.1 204 No Content\r\nMcp-Session-Id: s\r\n\r\n"])
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    @Test("more body than the Content-Length, or an end before all of it, closes the connection")
    func lengthHeld() throws {
        let over = try channel()
        over.write(head(.ok, [("Content-Length", "3")]), promise: nil)
        over.write(body("abc"), promise: nil)
        let extra = over.eventLoop.makePromise(of: Void.self)
        over.write(body("HTTP/1.1 200 OK"), promise: extra)
        #expect(Self.failed(extra))
        #expect(!over.isActive)
        #expect(try outbound(over).isEmpty)
        _ = try? over.finish()

        let short = try channel()
        short.write(head(.ok, [("Content-Length", "10")]), promise: nil)
        short.write(body("abc"), promise: nil)
        let ended = short.eventLoop.makePromise(of: Void.self)
        short.writeAndFlush(HTTPServerResponsePart.end(nil), promise: ended)
        #expect(Self.failed(ended))
        #expect(!short.isActive)
        _ = try? short.finish()
    }

    @Test(
        "control characters in a header never reach the client, and a bad Content-Length is refused",
        arguments: [
            ("X-Test", "a\r\nSet-Cookie: x=1"), ("X-Test", "a\nb"), ("X-Te\rst", "a"), ("X-Test", "a\u{0}b"), ("", "a"),
            ("X-Test", "a\u{1}b"), ("X-Test", "a\u{7F}"),
            ("Content-Length", "-1"), ("Content-Length", "1, 1"), ("Content-Length", "+5"), ("Content-Length", "5 "),
            ("Content-Length", "-0"), ("Content-Length", ""),
        ])
    func injection(name: String, value: String) throws {
        let channel = try channel()
        let sent = channel.eventLoop.makePromise(of: Void.self)
        channel.write(head(.ok, [(name, value)]), promise: sent)
        #expect(Self.failed(sent))
        let part = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(body("smuggled"), promise: part)
        #expect(Self.failed(part))
        #expect(try outbound(channel).isEmpty)
        #expect(!channel.isActive)
        _ = try? channel.finish()
    }

    @Test("a head while a response is open, or a write after a close-delimited body, closes the connection")
    func openResponse() throws {
        let open = try channel()
        open.write(head(.ok, [("Content-Length", "10")]), promise: nil)
        open.write(body("abc"), promise: nil)
        let second = open.eventLoop.makePromise(of: Void.self)
        open.write(head(.ok, [("Content-Length", "2")]), promise: second)
        #expect(Self.failed(second))
        #expect(!open.isActive)
        _ = try? open.finish()

        let closeDelimited = try channel()
        closeDelimited.write(head(.ok, [], version: .http1_0), promise: nil)
        closeDelimited.write(body("abc"), promise: nil)
        closeDelimited.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        #expect(try outbound(closeDelimited) == ["HTTP/1.0 200 OK\r\n\r\nabc"])
        let after = closeDelimited.eventLoop.makePromise(of: Void.self)
        closeDelimited.write(head(.ok, [("Content-Length", "0")], version: .http1_0), promise: after)
        #expect(Self.failed(after))
        #expect(!closeDelimited.isActive)
        _ = try? closeDelimited.finish()
    }

    @Test("closing sends what was written before the close, even without a flush")
    func closeFlushes() throws {
        let channel = try channel()
        channel.write(head(.ok, [("Content-Length", "2")]), promise: nil)
        channel.write(body("ok"), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.close(promise: nil)
        #expect(try outbound(channel) == ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        _ = try? channel.finish()
    }

    @Test("an answer to HEAD keeps the Content-Length a GET would get, carries no body, and the connection stays open")
    func head() throws {
        let encoder = ClientResponseEncoder(datesResponses: false)
        let channel = try channel(encoder)
        encoder.nextHeadAnswersHEAD()
        channel.write(head(.ok, [("Content-Length", "42")]), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        // The next answer is framed normally again.
        channel.write(head(.ok, [("Content-Length", "2")]), promise: nil)
        channel.write(body("ok"), promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        #expect(
            try outbound(channel) == ["HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        #expect(channel.isActive)
        _ = try channel.finish()
    }

    /// The response `parts` as NIO's own response parser reads the bytes an encoder wrote.
    private func decoded(_ parts: [HTTPServerResponsePart], encoder: any ChannelHandler) throws -> [String] {
        let writer = EmbeddedChannel()
        try writer.pipeline.syncOperations.addHandler(encoder)
        try writer.pipeline.syncOperations.addHandler(InboundTail())
        try writer.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        for part in parts { writer.write(part, promise: nil) }
        writer.flush()
        let reader = EmbeddedChannel()
        try reader.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
        try reader.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        while let bytes = try writer.readOutbound(as: ByteBuffer.self) { try reader.writeInbound(bytes) }
        if case .head(let head) = parts.first, head.version == .http1_0 || !writer.isActive { try reader.close().wait() }
        var seen: [String] = []
        while let part = try reader.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head(let head):
                let headers = head.headers.map { "\($0.name.lowercased()): \($0.value)" }.sorted()
                seen.append("\(head.status.code) \(headers)")
            case .body(let body): seen.append("body \(String(buffer: body))")
            case .end: seen.append("end")
            }
        }
        _ = try? writer.finish()
        _ = try? reader.finish()
        // Body parts may be split differently; what the client reads is their concatenation.
        var merged: [String] = []
        for part in seen {
            if part.hasPrefix("body "), let last = merged.last, last.hasPrefix("body ") {
                merged[merged.count - 1] = last + part.dropFirst(5)
            } else {
                merged.append(part)
            }
        }
        return merged
    }

    @Test("a client's HTTP parser reads the same responses from this encoder as from NIO's (generated cases)")
    func differential() throws {
        var generator = SystemRandomNumberGenerator()
        let statuses: [HTTPResponseStatus] = [.ok, .accepted, .badRequest, .notFound, .badGateway, .custom(code: 299, reasonPhrase: "Odd")]
        for _ in 0..<300 {
            let status = statuses.randomElement(using: &generator)!
            let bodies = (0..<Int.random(in: 0...3, using: &generator)).map { index in
                String(repeating: "abcdefgh", count: Int.random(in: 0...300, using: &generator)) + "\(index)"
            }
            let total = bodies.reduce(0) { $0 + $1.utf8.count }
            var headers: [(String, String)] = [("Content-Type", "application/json")]
            if Bool.random(using: &generator) { headers.append(("Content-Length", "\(total)")) }
            if Bool.random(using: &generator) { headers.append(("Transfer-Encoding", "chunked")) }
            if Bool.random(using: &generator) { headers.append(("Mcp-Session-Id", "s-\(total)")) }
            let parts = [head(status, headers)] + bodies.map(body) + [.end(nil)]
            let ours = try decoded(parts, encoder: EncodingStep(ClientResponseEncoder(datesResponses: false)))
            let nio = try decoded(parts, encoder: HTTPResponseEncoder())
            #expect(ours == nio, "\(headers) \(bodies.map(\.utf8.count))")
        }
    }
}

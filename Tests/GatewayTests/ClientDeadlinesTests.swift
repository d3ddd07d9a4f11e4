import NIOCore
import NIOEmbedded
import TestSupport
import Testing

@testable import Gateway

/// Records idle and slow-client events.
private final class IdleRecorder: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    var events = 0
    var slow: [SlowClientDetected] = []
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ConnectionIdle { events += 1 }
        if let event = event as? SlowClientDetected { slow.append(event) }
    }
}

/// Stands for the HTTP decoder and connection handler: each read is a whole request, answered before the read returns.
private final class ImmediateAnswers: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let deadlines: ClientDeadlines
    init(_ deadlines: ClientDeadlines) { self.deadlines = deadlines }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deadlines.headReceived(expectsBody: false)
        deadlines.exchangeFinished()
    }
}

/// Stands for the HTTP decoder and connection handler: the first read brings a head whose body follows, the next
/// one the rest of the body, and the request is answered before that read returns.
private final class BodyInSecondRead: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let deadlines: ClientDeadlines
    private var reads = 0
    init(_ deadlines: ClientDeadlines) { self.deadlines = deadlines }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reads += 1
        if reads == 1 {
            deadlines.headReceived(expectsBody: true)
        } else {
            deadlines.bodyReceived()
            deadlines.exchangeFinished()
        }
    }
}

/// Stands for the HTTP decoder and connection handler while a body arrives: of each read, all but `framingBytes` are
/// body bytes (chunk sizes and line ends are framing).
private final class BodyReads: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let deadlines: ClientDeadlines
    let framingBytes: Int
    init(_ deadlines: ClientDeadlines, framingBytes: Int = 0) { (self.deadlines, self.framingBytes) = (deadlines, framingBytes) }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deadlines.bodyBytesReceived(max(0, unwrapInboundIn(data).readableBytes - framingBytes))
    }
}

@Suite("Client connection deadlines")
struct ClientDeadlinesTests {
    /// Deadlines (idle 60 s, head 10 s, grace 5 s), then `above` (standing for the HTTP decoder and connection
    /// handler, if given), then a recorder of the events.
    private func channel(
        above: ((ClientDeadlines) -> any ChannelHandler)? = nil
    ) throws -> (EmbeddedChannel, IdleRecorder, ClientDeadlines) {
        let recorder = IdleRecorder()
        let channel = EmbeddedChannel()
        let deadlines = ClientDeadlines(
            idleTimeout: .seconds(60), headTimeout: .seconds(10), minimumBytesPerSecond: 1, gracePeriod: .seconds(5))
        try channel.pipeline.syncOperations.addHandler(deadlines)
        if let above { try channel.pipeline.syncOperations.addHandler(above(deadlines)) }
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder, deadlines)
    }

    @Test("a connection with no traffic is reported idle after the timeout, and again after each further timeout")
    func quiet() throws {
        let (channel, recorder, _) = try channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(recorder.events == 0)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(recorder.events == 1)
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(recorder.events == 2)
        _ = try channel.finish()
    }

    @Test("reads and writes each restart the idle time")
    func activity() throws {
        let (channel, recorder, _) = try channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(50))
        try channel.writeInbound(ByteBuffer(string: "x"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(50))
        #expect(recorder.events == 0)
        try channel.writeOutbound(ByteBuffer(string: "y"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(recorder.events == 0)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(recorder.events == 1)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("no event after the connection closed")
    func closed() throws {
        let (channel, recorder, _) = try channel()
        _ = try channel.finish()
        channel.embeddedEventLoop.advanceTime(by: .seconds(120))
        #expect(recorder.events == 0)
    }

    @Test("a head that has not arrived within the head deadline of its first byte is reported, once; idle still runs")
    func headDeadline() throws {
        let (channel, recorder, _) = try channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        try channel.writeInbound(ByteBuffer(string: "POST /mcp HTTP/1.1\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        try channel.writeInbound(ByteBuffer(string: "Host: x\r\n"))
        #expect(recorder.slow.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(recorder.slow == [.headTimeout])
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(recorder.slow == [.headTimeout])
        #expect(recorder.events == 1)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a head that arrives in time stops the head deadline; the next request's starts with its first byte")
    func headInTime() throws {
        let (channel, recorder, deadlines) = try channel()
        try channel.writeInbound(ByteBuffer(string: "POST /mcp HTTP/1.1\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        deadlines.headReceived(expectsBody: false)
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        deadlines.exchangeFinished()
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        #expect(recorder.slow.isEmpty)
        try channel.writeInbound(ByteBuffer(string: "G"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(recorder.slow == [.headTimeout])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a body whose end arrives in a later read, answered before that read returns, starts no head deadline")
    func bodyEndedInALaterRead() throws {
        let (channel, recorder, _) = try channel { BodyInSecondRead($0) }
        try channel.writeInbound(ByteBuffer(string: "POST /mcp HTTP/1.1\r\nContent-Length: 4\r\n\r\nab"))
        try channel.writeInbound(ByteBuffer(string: "cd"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(recorder.slow.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(recorder.events == 1)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a head taken from the pipelining queue (outside any read) whose body never comes is cut by the body rate")
    func pipelinedHeadWithoutBody() throws {
        let (channel, recorder, deadlines) = try channel()
        // The gateway hands over a queued head after the previous answer, on a later turn of the loop: no read
        // follows if the client sends nothing more.
        deadlines.headReceived(expectsBody: true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(recorder.slow == [.bodyTooSlow])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("credentials checked for longer than the grace period, then accepted, restart the body rate's clock")
    func bodyRateFromAuthentication() throws {
        let (channel, recorder, deadlines) = try channel()
        deadlines.headReceived(expectsBody: true)
        deadlines.authenticationStarted()
        // Found in review: credentials checked for longer than the grace period (an introspection, a key fetch), while
        // the gateway read no body or the client waited for `100 Continue`, had the client cut as slow. (A first fix
        // restarted the clock only once they were accepted, which a check of over 5 s did not reach: found by review.)
        channel.embeddedEventLoop.advanceTime(by: .seconds(8))
        #expect(recorder.slow.isEmpty)
        deadlines.authenticationFinished()
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(recorder.slow.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(recorder.slow == [.bodyTooSlow])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a body sent mostly at once and then held back is cut a window after it stops, not when its average runs out")
    func frontLoadedBodyThenNothing() throws {
        let (channel, recorder, deadlines) = try channel { BodyReads($0) }
        deadlines.headReceived(expectsBody: true)
        // 100 bytes at once: at 1 byte a second, an average since the start lasts 100 s (found by review: 4 MiB at
        // once held a connection and its memory for 68 minutes).
        try channel.writeInbound(ByteBuffer(repeating: 0x41, count: 100))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(recorder.slow.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(recorder.slow == [.bodyTooSlow])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    /// Deadlines held to 100 bytes a second of answer over 10 s windows, connected, then a recorder of the events.
    private func answerRateChannel() throws -> (EmbeddedChannel, IdleRecorder) {
        let recorder = IdleRecorder()
        let channel = EmbeddedChannel()
        let deadlines = ClientDeadlines(
            idleTimeout: .seconds(600), headTimeout: .seconds(10), minimumBytesPerSecond: 1, gracePeriod: .seconds(5),
            minimumAnswerBytesPerSecond: 100, answerRateWindow: .seconds(10))
        try channel.pipeline.syncOperations.addHandler(deadlines)
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder)
    }

    @Test(
        "a client behind on its answer must take it at the minimum rate over each window it spends behind; one that catches up is no longer watched"
    )
    func answerRate() throws {
        let (channel, recorder) = try answerRateChannel()
        // Behind, and taking 2,000 bytes in the first window (enough), then 500 in the next (too few: found by review
        // and left until now, a client reading at a trickle held its answer for good).
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeOutbound(ByteBuffer(repeating: 0x41, count: 2000))
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(recorder.slow.isEmpty)
        try channel.writeOutbound(ByteBuffer(repeating: 0x41, count: 500))
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(recorder.slow == [.answerTooSlow])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a client that falls behind once and catches up is not cut for a quiet stream afterwards")
    func answerRateCaughtUp() throws {
        let (channel, recorder) = try answerRateChannel()
        // One large write fills the socket for a moment (its bytes counted before the watch starts); the client takes
        // it at once, and nothing more is written (found by review: cut 30 s later as slow).
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        // A quiet stream: nothing written for minutes, the socket never full again.
        channel.embeddedEventLoop.advanceTime(by: .seconds(300))
        #expect(recorder.slow.isEmpty)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a body that keeps the rate in every window is not cut, however long it takes")
    func steadyBodyNotCut() throws {
        let (channel, recorder, deadlines) = try channel { BodyReads($0) }
        deadlines.headReceived(expectsBody: true)
        for _ in 0..<20 {
            try channel.writeInbound(ByteBuffer(repeating: 0x41, count: 4))
            channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        }
        #expect(recorder.slow.isEmpty)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("only a body's own bytes keep its rate: chunk framing read at any pace does not")
    func framingIsNotBody() throws {
        // Chunks of one byte behind sizes padded with zeros: 21 bytes read for each byte of body, so a body could keep
        // the rate with a twentieth of it (found by review).
        let (channel, recorder, deadlines) = try channel { BodyReads($0, framingBytes: 21) }
        deadlines.headReceived(expectsBody: true)
        for _ in 0..<5 {
            try channel.writeInbound(ByteBuffer(repeating: 0x41, count: 21))
            channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        }
        #expect(recorder.slow == [.bodyTooSlow])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a request whole in one read and answered before the read returns starts no head deadline")
    func answeredWithinTheRead() throws {
        let (channel, recorder, _) = try channel { ImmediateAnswers($0) }
        try channel.writeInbound(ByteBuffer(string: "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
        // A keep-alive client between requests is held to the idle timeout, not to the head deadline.
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(recorder.slow.isEmpty)
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(recorder.events == 1)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }
}

/// Request bodies on their way in count against their tenant's share and a total (beyond the first 64 KiB of each).
@Suite("Request bodies being received", .serialized)
struct ReceivingBodiesTests {
    /// A head declaring a 1 MB body, and the first `sent` bytes of it.
    static func partialPost(sending sent: Int) -> String {
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            + "Content-Length: 1000000\r\n\r\n" + String(repeating: " ", count: sent)
    }

    @Test(
        "bodies held on their way in count against the tenant's share: past it, 503 and the connection closed, recorded; another tenant is not affected; the share comes back when a body goes"
    )
    func tenantShareOfBodiesOnTheirWay() async throws {
        var limits = GatewayLimits()
        limits.maximumReceivingBodyBytesPerTenant = 200_000
        // The bodies stop halfway and must stay held for the test's length: no body rate within it (under load, its
        // 5 s windows cut them before the third arrived).
        limits.bodyRateGracePeriod = .seconds(300)
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url, limits: limits)
        // Two acme bodies of 150,000 bytes so far: 84,464 counted each (all but the first 65,536) (found by review: such bodies, sent mostly at
        // once, held their memory on as many connections as a source may open).
        let first = try await RawTLSClient.connect(port: gateway.port)
        try await first.send(Self.partialPost(sending: 150_000))
        let second = try await RawTLSClient.connect(port: gateway.port, agent: "acme/agents/bot2")
        try await second.send(Self.partialPost(sending: 150_000))
        #expect(try await eventually(within: .seconds(10)) { gateway.services.receivingBodies.total == 168_928 })
        let third = try await RawTLSClient.connect(port: gateway.port)
        try await third.send(Self.partialPost(sending: 150_000))
        #expect(await third.wait { $0.contains("\r\n\r\n{") && $0.hasSuffix("}") })
        #expect(third.text.hasPrefix("HTTP/1.1 503"), "\(third.text.prefix(300))")
        #expect(third.text.contains("Retry-After: 1"))
        #expect(await third.waitForClose())
        // globex's share is its own.
        let globex = try await RawTLSClient.connect(port: gateway.port, agent: "globex/agents/bot1")
        try await globex.send(Self.partialPost(sending: 150_000))
        #expect(try await eventually(within: .seconds(10)) { gateway.services.receivingBodies.total == 253_392 })
        #expect(!globex.text.contains("503"))
        // A body that goes gives its share back.
        await first.close()
        #expect(try await eventually(within: .seconds(10)) { gateway.services.receivingBodies.total == 168_928 })
        await second.close()
        await globex.close()
        #expect(try await eventually(within: .seconds(10)) { gateway.services.receivingBodies.total == 0 })
        let records = try gateway.auditRecords().filter { $0["rule"] == .string("receiving_body_bytes") }
        #expect(records.count == 1)
        #expect(records.first?["decision"] == .string("unavailable"))
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a body decided and forwarded gives its share back")
    func shareGivenBackWhenDecided() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await GatewayFixture.start(upstream: upstream.url)
        let padding = String(repeating: " ", count: 200_000)
        let response = try await gateway.client().send(body: RPC.call("read_file", #"{"path":"a.txt"}"#) + padding)
        #expect(response.status == 200)
        #expect(gateway.services.receivingBodies.total == 0)
        try await gateway.stop()
        await upstream.stop()
    }
}

import NIOCore
import NIOEmbedded
import Testing

@testable import Gateway

/// Records idle events.
private final class IdleRecorder: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    var events = 0
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ConnectionIdle { events += 1 }
    }
}

@Suite("Idle connection timer")
struct IdleConnectionTimerTests {
    private func channel() throws -> (EmbeddedChannel, IdleRecorder) {
        let recorder = IdleRecorder()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(IdleConnectionTimer(timeout: .seconds(60)))
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, recorder)
    }

    @Test("a connection with no traffic is reported idle after the timeout, and again after each further timeout")
    func quiet() throws {
        let (channel, recorder) = try channel()
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
        let (channel, recorder) = try channel()
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
        let (channel, recorder) = try channel()
        _ = try channel.finish()
        channel.embeddedEventLoop.advanceTime(by: .seconds(120))
        #expect(recorder.events == 0)
    }
}

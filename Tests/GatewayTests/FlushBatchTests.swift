import NIOCore
import NIOEmbedded
import Testing

@testable import Gateway

@Suite("Flushes batched per event-loop round")
struct FlushBatchTests {
    @Test("flushes asked for during a round go out together when it ends, each channel's writes in order")
    func batched() throws {
        let loop = EmbeddedEventLoop()
        let first = EmbeddedChannel(loop: loop)
        let second = EmbeddedChannel(loop: loop)
        for channel in [first, second] {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }
        first.write(ByteBuffer(string: "a1"), promise: nil)
        FlushBatch.flushSoon(first)
        second.write(ByteBuffer(string: "b1"), promise: nil)
        FlushBatch.flushSoon(second)
        first.write(ByteBuffer(string: "a2"), promise: nil)
        FlushBatch.flushSoon(first)
        // Still in the round: nothing has reached the sockets.
        #expect(try first.readOutbound(as: ByteBuffer.self) == nil)
        #expect(try second.readOutbound(as: ByteBuffer.self) == nil)
        loop.run()
        #expect(try first.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "a1"))
        #expect(try first.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "a2"))
        #expect(try second.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "b1"))
        // The next round batches anew.
        second.write(ByteBuffer(string: "b2"), promise: nil)
        FlushBatch.flushSoon(second)
        #expect(try second.readOutbound(as: ByteBuffer.self) == nil)
        loop.run()
        #expect(try second.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "b2"))
        _ = try first.finish()
        _ = try second.finish()
    }

    @Test("a flush asked for off the channel's loop, or beside another loop's round on the same thread, goes out at once")
    func otherLoops() throws {
        let busy = EmbeddedEventLoop()
        let other = EmbeddedEventLoop()
        let first = EmbeddedChannel(loop: busy)
        let second = EmbeddedChannel(loop: other)
        for channel in [first, second] {
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }
        first.write(ByteBuffer(string: "a"), promise: nil)
        FlushBatch.flushSoon(first)
        second.write(ByteBuffer(string: "b"), promise: nil)
        FlushBatch.flushSoon(second)
        #expect(try second.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "b"))
        #expect(try first.readOutbound(as: ByteBuffer.self) == nil)
        busy.run()
        #expect(try first.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "a"))
        _ = try first.finish()
        _ = try second.finish()
    }
}

import NIOCore
import NIOEmbedded
import Testing

@testable import Redis

/// The command handler against a peer that does not behave like Redis.
@Suite struct RedisCommandHandlerTests {
    static func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RedisCommandHandler())
        return channel
    }

    static func send(_ channel: EmbeddedChannel, _ command: String) throws -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        try channel.writeOutbound(
            RedisCommandHandler.Command(arguments: [Array(command.utf8)], promise: promise, deadline: .now() + .seconds(60)))
        _ = try channel.readOutbound(as: ByteBuffer.self)
        return promise.futureResult
    }

    static func failure(_ future: EventLoopFuture<RESPValue>) -> RedisError? {
        var result: RedisError?
        future.assumeIsolated().whenFailure { result = $0 as? RedisError }
        return result
    }

    @Test func aReplyNoCommandAskedForClosesTheConnection() throws {
        let channel = try Self.channel()
        let ping = try Self.send(channel, "PING")
        try channel.writeInbound(ByteBuffer(string: "+PONG\r\n+EXTRA\r\n"))
        #expect(try ping.wait() == .simpleString("PONG"))
        #expect(!channel.isActive)
    }

    @Test func bytesWithNoCommandWaitingCloseTheConnection() throws {
        let channel = try Self.channel()
        try channel.writeInbound(ByteBuffer(string: "+"))
        #expect(!channel.isActive)
    }

    @Test func aReplyLargerThanTheBoundFailsItsCommand() throws {
        let channel = try Self.channel()
        let get = try Self.send(channel, "GET")
        // A bulk string within the parser's 1 MiB bound, but far beyond what this client's replies can be.
        try channel.writeInbound(ByteBuffer(string: "$1000000\r\n" + String(repeating: "x", count: 70_000)))
        guard case .protocolError(let why)? = Self.failure(get) else {
            Issue.record("the oversized reply did not fail its command")
            return
        }
        #expect(why.contains("larger than"))
        #expect(!channel.isActive)
    }

    @Test func commandsAfterAFailureFailAtOnce() throws {
        let channel = try Self.channel()
        let first = try Self.send(channel, "PING")
        try channel.writeInbound(ByteBuffer(string: "!not resp\r\n"))
        #expect(Self.failure(first) != nil)
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        channel.write(RedisCommandHandler.Command(arguments: [], promise: promise, deadline: .now() + .seconds(1)), promise: nil)
        #expect(Self.failure(promise.futureResult) != nil)
    }
}

import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TLS
import TestSupport
import Testing

/// Byte counts and received data shared between an event loop and the test.
final class TransferLog: Sendable {
    private let state = NIOLockedValueBox((count: 0, data: ByteBuffer()))
    private let keepData: Bool

    init(keepData: Bool) { self.keepData = keepData }

    func record(_ buffer: ByteBuffer) {
        state.withLockedValue {
            $0.count += buffer.readableBytes
            if keepData { $0.data.writeImmutableBuffer(buffer) }
        }
    }

    var count: Int { state.withLockedValue { $0.count } }
    var data: ByteBuffer { state.withLockedValue { $0.data } }
}

/// Echoes every byte back (server side), counting what it read.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let log: TransferLog

    init(log: TransferLog) { self.log = log }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        log.record(unwrapInboundIn(data))
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

/// Collects what the client receives.
final class CollectingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let log: TransferLog
    init(log: TransferLog) { self.log = log }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { log.record(unwrapInboundIn(data)) }
}

@Suite("TLS handler over loopback sockets")
struct LoopbackBackpressureTests {
    /// Polls `condition` every 20 ms for at most `seconds`.
    func waitUntil(seconds: Double, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !condition() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    }

    /// The largest buffer the kernel's autotuning may give a TCP socket (the third value of
    /// /proc/sys/net/ipv4/`name`), or 6 MiB, Linux's default for receive buffers, when it cannot be read.
    static func tcpBufferLimit(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/\(name)", encoding: .utf8),
            let last = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).last, let value = Int(last)
        else { return 6 * 1024 * 1024 }
        return value
    }

    @Test("8 MiB echo intact both ways; a client that stops reading stops the server reading, without unbounded buffering")
    func echoAndBackpressure() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let serverContext = try TLSContext(role: .server, configuration: DevTLS.server())
        let clientContext = try TLSContext(role: .client, configuration: DevTLS.client())
        let serverLog = TransferLog(keepData: false)
        let serverChannelBox = NIOLockedValueBox<(any Channel)?>(nil)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                serverChannelBox.withLockedValue { $0 = channel }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        TLSHandler(context: serverContext, logger: Logger(label: "server")),
                        BackPressureHandler(), EchoHandler(log: serverLog),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let clientLog = TransferLog(keepData: true)
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        TLSHandler(context: clientContext, serverHostname: "localhost", logger: Logger(label: "client")),
                        CollectingHandler(log: clientLog),
                    ])
                }
            }
            .connect(to: server.localAddress!).get()

        // 1. 8 MiB there and back, intact.
        let eight = DataTransferTests.payload(8 * 1024 * 1024, seed: 7)
        try await client.writeAndFlush(eight)
        try await waitUntil(seconds: 30) { clientLog.count >= eight.readableBytes }
        #expect(clientLog.data == eight)

        // 2. The client stops reading and keeps writing 64 MiB.
        // Everything sent so far has been echoed and read (waited for above): no read is in flight when reading stops.
        try await client.setOption(.autoRead, value: false).get()
        let alreadyEchoed = clientLog.count
        // What the server may read while the client does not: what it echoed and the client has not read, held by the
        // client's receive buffer and the server's send buffer, which loopback autotuning grows up to the kernel's
        // limits (tcp_rmem and tcp_wmem: 32 MiB and 4 MiB on one CI machine), plus what NIO buffers (checked
        // separately below, under 4 MiB) and TLS records in flight. The flood is larger than twice that, so reading
        // without bound (the whole flood) is told apart on any machine.
        let kernelBuffers = Self.tcpBufferLimit("tcp_rmem") + Self.tcpBufferLimit("tcp_wmem")
        let bound = kernelBuffers + 5 * 1024 * 1024
        let flood = DataTransferTests.payload(max(64 * 1024 * 1024, 2 * bound), seed: 9)
        client.writeAndFlush(flood, promise: nil)
        // Wait until the server has stopped making progress (bounded).
        var previous = -1
        for _ in 0..<100 where serverLog.count != previous {
            previous = serverLog.count
            try await Task.sleep(for: .milliseconds(100))
        }
        let serverChannel = try #require(serverChannelBox.withLockedValue { $0 })
        let buffered = try await serverChannel.getOption(.bufferedWritableBytes).get()
        let readWhileStalled = serverLog.count - eight.readableBytes
        // Bounded by the kernel's socket buffers (16.2 MiB was seen on one machine, 25 MiB on one whose tcp_rmem allows
        // 32 MiB); unbounded would be the whole flood.
        #expect(readWhileStalled < bound, "server read \(readWhileStalled) bytes while the client was not reading (bound \(bound))")
        #expect(buffered < 4 * 1024 * 1024, "server buffered \(buffered) bytes for a client that does not read")

        // 3. The client reads again: everything arrives, intact.
        try await client.setOption(.autoRead, value: true).get()
        client.read()
        try await waitUntil(seconds: 60) { clientLog.count >= alreadyEchoed + flood.readableBytes }
        var received = clientLog.data
        received.moveReaderIndex(forwardBy: eight.readableBytes)
        #expect(received == flood)

        try await client.close()
        try await server.close()
    }
}

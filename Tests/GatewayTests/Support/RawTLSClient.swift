import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TLS
import TestSupport

/// A TLS connection to the gateway that sends exactly the bytes it is given and keeps every byte it receives, for
/// tests of HTTP framing, keep-alive, pipelining and slow clients.
final class RawTLSClient: Sendable {
    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox<[UInt8]>([])
        let closed = NIOLockedValueBox(false)
        /// Once the bytes received contain these, reading stops (on the channel's own loop, at once).
        let stopMarker = NIOLockedValueBox<[UInt8]?>(nil)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            let stop = received.withLockedValue { received -> Bool in
                received += buffer.readableBytesView
                guard let marker = stopMarker.withLockedValue({ $0 }) else { return false }
                return received.withUnsafeBufferPointer { bytes in
                    bytes.count >= marker.count
                        && (0...(bytes.count - marker.count)).contains { start in
                            bytes[start..<start + marker.count].elementsEqual(marker)
                        }
                }
            }
            if stop {
                stopMarker.withLockedValue { $0 = nil }
                try? context.channel.syncOptions?.setOption(.autoRead, value: false)
            }
        }
        func channelInactive(context: ChannelHandlerContext) { closed.withLockedValue { $0 = true } }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    let channel: any Channel
    let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects to 127.0.0.1:`port` as `agent` (a certs-dev path), or without a client certificate.
    /// `preamble`, when given, is written before the TLS handshake starts (a load balancer's PROXY protocol header).
    static func connect(port: Int, agent: String? = "acme/agents/bot1", preamble: [UInt8]? = nil) async throws -> RawTLSClient {
        var configuration = TLSConfiguration(trustedCABundles: [.init(label: "gateway", path: DevPKI.gatewayCA)])
        if let agent {
            configuration.certificateChainFile = DevPKI.path(agent + ".pem")
            configuration.privateKeyFile = DevPKI.path(agent + ".key")
        }
        let context = try TLSContext(role: .client, configuration: configuration)
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let preamble { try channel.pipeline.syncOperations.addHandler(PreambleWriter(bytes: preamble)) }
                    try channel.pipeline.syncOperations.addHandler(
                        TLSHandler(context: context, serverHostname: "localhost", logger: Logger(label: "raw-client")))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawTLSClient(channel: channel, collector: collector)
    }

    /// Stops reading from the socket as soon as the bytes received contain `marker` (decided on the channel's loop,
    /// not when a test task gets to it).
    func stopReading(whenReceived marker: String) { collector.stopMarker.withLockedValue { $0 = Array(marker.utf8) } }

    /// Stops or resumes reading from the socket (a client that does not keep up).
    func setReading(_ reading: Bool) async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: reading).get()
        if reading { channel.read() }
    }

    /// Bytes received so far.
    var receivedCount: Int { collector.received.withLockedValue { $0.count } }

    /// Sends bytes as they are.
    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    /// Sends raw bytes.
    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Everything received so far, as text.
    var text: String { String(decoding: collector.received.withLockedValue { $0 }, as: UTF8.self) }
    /// Whether the gateway closed the connection.
    var isClosed: Bool { collector.closed.withLockedValue { $0 } }

    /// Waits (at most `timeout`) until `condition` holds for the received text or the connection closed; returns
    /// whether it holds.
    @discardableResult
    func wait(timeout: Duration = .seconds(10), until condition: @Sendable (String) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(text) { return true }
            if isClosed { return condition(text) }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return condition(text)
    }

    /// Waits (at most `timeout`) for the gateway to close the connection.
    func waitForClose(timeout: Duration = .seconds(10)) async -> Bool {
        await wait(timeout: timeout) { _ in false }
        return isClosed
    }

    func close() async { try? await channel.close() }

    /// A complete request with a JSON body on a kept-alive connection.
    static func post(_ body: String, headers: [(String, String)] = [], keepAlive: Bool = true) -> String {
        var text = "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        text += "Accept: application/json, text/event-stream\r\nContent-Length: \(body.utf8.count)\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if !keepAlive { text += "Connection: close\r\n" }
        return text + "\r\n" + body
    }
}

/// The status lines (`HTTP/1.1 200`) of the responses in a byte stream, in order (bodies in these tests never
/// contain "HTTP/1.1 ").
func statusLines(_ text: String) -> [String] {
    var lines: [String] = []
    var rest = text[...]
    while let range = rest.range(of: "HTTP/1.1 ") {
        lines.append("HTTP/1.1 " + rest[range.upperBound...].prefix(3))
        rest = rest[range.upperBound...]
    }
    return lines
}

/// Writes its bytes to the socket as the connection opens, before the handlers behind it see it open.
private final class PreambleWriter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let bytes: [UInt8]

    init(bytes: [UInt8]) { self.bytes = bytes }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
        context.fireChannelActive()
    }
}

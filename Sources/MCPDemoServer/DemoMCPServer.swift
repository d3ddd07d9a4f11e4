public import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON
import Synchronization

/// A small MCP server over Streamable HTTP (JSON responses, sessions) with demo tools over an in-memory store:
/// `read_file`, `write_file`, `list_files`, `delete_file`, `exec_sql`. For `mcpgw demo` and end-to-end tests.
/// It listens on loopback only, speaks plain HTTP, and remembers every body it receives.
public final class DemoMCPServer: Sendable {
    /// The bound address.
    public let localAddress: SocketAddress
    private let channel: any Channel
    private let log: SharedLog

    private init(channel: any Channel, log: SharedLog) {
        self.channel = channel
        self.localAddress = channel.localAddress!
        self.log = log
    }

    /// The MCP endpoint URL.
    public var url: String { "http://127.0.0.1:\(localAddress.port!)/mcp" }

    /// Every request body received so far, in order.
    public var receivedBodies: [String] { log.all }

    /// Starts a server on 127.0.0.1 (port 0: any free port).
    public static func start(port: Int = 0) async throws -> DemoMCPServer {
        let store = DemoStore()
        let shared = SharedLog()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DemoHTTPHandler(store: store, log: shared))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        return DemoMCPServer(channel: channel, log: shared)
    }

    /// Stops listening.
    public func stop() async {
        try? await channel.close()
    }
}

/// The body log, shareable with handlers.
final class SharedLog: Sendable {
    private let log = Mutex<[String]>([])
    func append(_ text: String) { log.withLock { $0.append(text) } }
    var all: [String] { log.withLock { $0 } }
}

import Logging
public import NIOCore
public import NIOEmbedded
public import TLS

/// Records what reaches the top of a TLS pipeline: the handshake event, plaintext, errors, half-closure.
public final class PipelineRecorder: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer

    /// A recorder with nothing recorded yet.
    public init() {}

    /// The handshake event, once fired.
    public var handshake: TLSHandshakeCompleted?
    /// Errors that reached the top of the pipeline.
    public var errors: [any Error] = []
    /// Plaintext received.
    public var received = ByteBuffer()
    /// Whether inputClosed was seen.
    public var inputClosed = false

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSHandshakeCompleted { handshake = event }
        if let event = event as? ChannelEvent, event == .inputClosed { inputClosed = true }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors.append(error)
    }
}

/// A client and a server `EmbeddedChannel`, each with a `TLSHandler` and a recorder, wired back to back.
public struct InMemoryTLSPair {
    /// The client end.
    public let client = EmbeddedChannel()
    /// The server end.
    public let server = EmbeddedChannel()
    /// What reached the top of the client pipeline.
    public let clientRecorder = PipelineRecorder()
    /// What reached the top of the server pipeline.
    public let serverRecorder = PipelineRecorder()
    /// The server handler's log lines.
    public let serverLog: RecordingLogHandler.Store

    /// Builds both ends (not yet connected).
    public init(
        server serverConfiguration: TLSConfiguration, client clientConfiguration: TLSConfiguration,
        serverHostname: String? = "localhost"
    ) throws {
        let (serverLogger, store) = RecordingLogHandler.logger()
        serverLog = store
        let serverContext = try TLSContext(role: .server, configuration: serverConfiguration)
        let clientContext = try TLSContext(role: .client, configuration: clientConfiguration)
        try server.pipeline.syncOperations.addHandlers([
            TLSHandler(context: serverContext, logger: serverLogger), serverRecorder,
        ])
        try client.pipeline.syncOperations.addHandlers([
            TLSHandler(context: clientContext, serverHostname: serverHostname, logger: Logger(label: "client")),
            clientRecorder,
        ])
    }

    /// Connects both ends and pumps bytes between them until neither has anything to say.
    public func connect() throws {
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        try pump()
    }

    /// Moves ciphertext both ways until both channels are quiet (bounded: gives up after 10,000 rounds).
    public func pump() throws {
        for _ in 0..<10_000 {
            var moved = false
            while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                moved = true
                try server.writeInbound(bytes)
            }
            while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                moved = true
                try client.writeInbound(bytes)
            }
            if !moved { return }
        }
    }
}

/// Configurations built on the development PKI.
public enum DevTLS {
    /// The gateway's server configuration on the development PKI (acme and globex CAs, CRLs).
    public static func server(
        clientAuthentication: TLSConfiguration.ClientAuthentication = .required,
        crl: Bool = true
    ) -> TLSConfiguration {
        TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [
                .init(label: "acme", path: DevPKI.tenantCA("acme")),
                .init(label: "globex", path: DevPKI.tenantCA("globex")),
            ],
            clientAuthentication: clientAuthentication,
            crlFiles: crl ? [DevPKI.tenantCRL("acme"), DevPKI.tenantCRL("globex")] : [])
    }

    /// A client configuration presenting `tenant`/`agent`'s certificate (none when `tenant` is nil).
    public static func client(
        tenant: String? = "acme", agent: String = "bot1",
        maximumVersion: TLSConfiguration.ProtocolVersion? = nil
    ) -> TLSConfiguration {
        let credential = tenant.map { DevPKI.agent($0, agent) }
        return TLSConfiguration(
            certificateChainFile: credential?.certificate, privateKeyFile: credential?.key,
            trustedCABundles: [.init(label: "gateway", path: DevPKI.gatewayCA)],
            maximumVersion: maximumVersion)
    }
}

extension DevTLS {
    /// The verified peer certificate the gateway sees when `path` (e.g. `acme/agents/bot1`) connects, from a real
    /// in-memory handshake; nil when the handshake refuses it.
    public static func verifiedCertificate(_ path: String) throws -> PeerCertificate? {
        try verifiedCertificate(chainFile: DevPKI.path(path + ".pem"), keyFile: DevPKI.path(path + ".key"))
    }

    /// The same for a certificate chain (leaf first) and key anywhere.
    public static func verifiedCertificate(chainFile: String, keyFile: String) throws -> PeerCertificate? {
        var client = DevTLS.client(tenant: nil)
        client.certificateChainFile = chainFile
        client.privateKeyFile = keyFile
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: client)
        try pair.connect()
        return pair.serverRecorder.handshake?.peerCertificate
    }
}

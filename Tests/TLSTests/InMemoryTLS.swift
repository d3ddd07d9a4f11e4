import Logging
import NIOCore
import NIOEmbedded
import TLS
import TestSupport

/// Records what reaches the top of a TLS pipeline: the handshake event, plaintext, errors, half-closure.
final class PipelineRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    var handshake: TLSHandshakeCompleted?
    var errors: [any Error] = []
    var received = ByteBuffer()
    var inputClosed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSHandshakeCompleted { handshake = event }
        if let event = event as? ChannelEvent, event == .inputClosed { inputClosed = true }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors.append(error)
    }
}

/// A client and a server `EmbeddedChannel`, each with a `TLSHandler` and a recorder, wired back to back.
struct InMemoryTLSPair {
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let clientRecorder = PipelineRecorder()
    let serverRecorder = PipelineRecorder()
    let serverLog: RecordingLogHandler.Store

    init(server serverConfiguration: TLSConfiguration, client clientConfiguration: TLSConfiguration,
         serverHostname: String? = "localhost") throws {
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
    func connect() throws {
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        try pump()
    }

    /// Moves ciphertext both ways until both channels are quiet (bounded: gives up after 10,000 rounds).
    func pump() throws {
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
enum DevTLS {
    static func server(clientAuthentication: TLSConfiguration.ClientAuthentication = .required,
                       crl: Bool = true) -> TLSConfiguration {
        TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [
                .init(label: "acme", path: DevPKI.tenantCA("acme")),
                .init(label: "globex", path: DevPKI.tenantCA("globex")),
            ],
            clientAuthentication: clientAuthentication,
            crlFiles: crl ? [DevPKI.tenantCRL("acme"), DevPKI.tenantCRL("globex")] : [])
    }

    static func client(tenant: String? = "acme", agent: String = "bot1",
                       maximumVersion: TLSConfiguration.ProtocolVersion? = nil) -> TLSConfiguration {
        let credential = tenant.map { DevPKI.agent($0, agent) }
        return TLSConfiguration(
            certificateChainFile: credential?.certificate, privateKeyFile: credential?.key,
            trustedCABundles: [.init(label: "gateway", path: DevPKI.gatewayCA)],
            maximumVersion: maximumVersion)
    }
}

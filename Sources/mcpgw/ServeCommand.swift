public import ArgumentParser
import Gateway
import Logging
import ServiceLifecycle
public import TLS

/// `mcpgw serve`: runs the gateway's listener until SIGTERM or SIGINT.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the gateway listener (TLS, optional mTLS) until SIGTERM/SIGINT.",
        discussion: """
            The defaults use the development PKI in certs-dev/ (run from the repository root): the gateway \
            certificate for localhost, and the acme and globex tenant CAs with their CRLs for client certificates.
            """
    )

    @Option(help: "Address to listen on, HOST:PORT ([::1]:8443 for IPv6).")
    var listen: String = "127.0.0.1:8443"

    @Option(help: "PEM certificate chain of the gateway (leaf first).")
    var cert: String = "certs-dev/server.pem"

    @Option(help: "PEM private key of the gateway certificate.")
    var key: String = "certs-dev/server.key"

    @Option(
        name: .customLong("client-ca"),
        help: "Trusted client CA bundle as TENANT=FILE; repeat for each tenant.")
    var clientCAs: [String] = ["acme=certs-dev/acme/ca.pem", "globex=certs-dev/globex/ca.pem"]

    @Option(name: .customLong("crl"), help: "PEM CRL for client certificates; repeat for each CA.")
    var crls: [String] = ["certs-dev/acme/ca.crl.pem", "certs-dev/globex/ca.crl.pem"]

    @Option(help: "Client certificates: none, optional (verified when sent) or required.")
    var clientAuth: TLSConfiguration.ClientAuthentication = .optional

    @Option(help: "Lowest TLS version accepted: TLSv1.2 or TLSv1.3.")
    var minTLS: TLSConfiguration.ProtocolVersion = .tls1_2

    @Flag(help: "Serve plain HTTP without TLS. Insecure: credentials and arguments cross the network in clear text.")
    var insecurePlainHttp = false

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "mcpgw")
        guard let address = ListenAddress(parsing: listen) else {
            throw ValidationError("--listen '\(listen)' is not HOST:PORT (IPv6 in brackets: [::1]:8443)")
        }
        var tls: TLSConfiguration?
        if !insecurePlainHttp {
            tls = TLSConfiguration(
                certificateChainFile: cert, privateKeyFile: key,
                trustedCABundles: try clientCAs.map(Self.bundle),
                clientAuthentication: clientAuth, minimumVersion: minTLS,
                crlFiles: clientAuth == .none ? [] : crls)
        }
        let configuration = GatewayConfiguration(listen: address, tls: tls, allowInsecurePlainHTTP: insecurePlainHttp)
        let group = ServiceGroup(
            services: [GatewayService(configuration: configuration, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        do {
            try await group.run()
        } catch {
            logger.critical("mcpgw stopped: \(error)")
            throw ExitCode.failure
        }
    }

    private static func bundle(_ text: String) throws -> TLSConfiguration.TrustedCABundle {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex, text.index(after: equals) != text.endIndex
        else { throw ValidationError("--client-ca '\(text)' is not TENANT=FILE") }
        return .init(label: String(text[..<equals]), path: String(text[text.index(after: equals)...]))
    }
}

extension TLSConfiguration.ClientAuthentication: ExpressibleByArgument {}
extension TLSConfiguration.ProtocolVersion: ExpressibleByArgument {}

public import ArgumentParser
import Foundation
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

    @Option(
        help:
            "Gateway configuration file (JSON); flags given as well override it. Default: mcpgw.dev.json when it is in the current folder.")
    var config: String?

    @Option(
        name: [.customLong("listen"), .customLong("listen", withSingleDash: true)],
        help: "Address to listen on, HOST:PORT ([::1]:8443 for IPv6). Default 127.0.0.1:8443.")
    var listen: String?

    @Option(
        name: [.customLong("upstream"), .customLong("upstream", withSingleDash: true)],
        help: "Upstream MCP endpoint URL for every tenant (overrides the tenants' upstreams).")
    var upstream: String?

    @Option(
        name: [.customLong("policies"), .customLong("policy"), .customLong("policy", withSingleDash: true)],
        help: "Policies directory (policies/<tenant>/*.json), or one classic policy file for every tenant.")
    var policies: String?

    @Option(help: "Audit log: a file path, or - for standard output.")
    var auditLog: String?

    @Option(help: "PEM certificate chain of the gateway (leaf first). Default certs-dev/server.pem.")
    var cert: String?

    @Option(help: "PEM private key of the gateway certificate. Default certs-dev/server.key.")
    var key: String?

    @Option(
        name: .customLong("client-ca"),
        help:
            "Trusted client CA bundle as TENANT=FILE; repeat per tenant. Default: the acme and globex dev CAs. Not with --config (use its tenants)."
    )
    var clientCAs: [String] = []

    @Option(name: .customLong("crl"), help: "PEM CRL for client certificates; repeatable. Not with --config.")
    var crls: [String] = []

    @Option(help: "Client certificates: none, optional (verified when sent) or required. Default optional.")
    var clientAuth: TLSConfiguration.ClientAuthentication?

    @Option(help: "Lowest TLS version accepted: TLSv1.2 or TLSv1.3. Default TLSv1.2.")
    var minTLS: TLSConfiguration.ProtocolVersion?

    @Flag(help: "Serve plain HTTP without TLS. Insecure: credentials and arguments cross the network in clear text.")
    var insecurePlainHttp = false

    @Option(
        help:
            "Admin listener (/healthz, /readyz, /metrics, POST /reload) on HOST:PORT, e.g. 127.0.0.1:9464. Overrides admin.listen; off unless one is set."
    )
    var adminListen: String?

    @Option(
        help:
            "Share rate limits across replicas through this Redis server (redis://HOST:PORT/DB, rediss:// for TLS). Overrides redis.url; the password goes in redis.password_file."
    )
    var redis: String?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if config != nil && (!clientCAs.isEmpty || !crls.isEmpty) {
            throw ValidationError("--client-ca and --crl cannot be combined with --config: list CAs under the config's tenants")
        }
    }

    func run() async throws {
        // A SIGHUP (log rotation's `postrotate`) must never end the gateway: not while it starts, before the reload
        // service takes the signal over, and not when it runs without a configuration file (nothing to reload).
        signal(SIGHUP, SIG_IGN)
        let logger = logging.bootstrap(label: "mcpgw")
        logger.info("starting", metadata: ["memory.allocator": "\(MemoryAllocator.description)"])
        var configuration: GatewayConfiguration
        var services: GatewayServices?
        // Trust flags (--client-ca, --crl) mean "no configuration file": mcpgw.dev.json in the working directory is
        // then not picked up, and the flags are not silently dropped (found by review: a --crl was ignored).
        let configPath =
            config
            ?? (FileManager.default.fileExists(atPath: "mcpgw.dev.json") && clientCAs.isEmpty && crls.isEmpty ? "mcpgw.dev.json" : nil)
        if let configPath {
            // The same checks as `mcpgw config check`, with the same messages: all of them, before anything starts.
            let problems = ConfigCommand.Check.problems(
                in: configPath, policies: policies, upstreamOverridden: upstream != nil,
                tlsOverridden: cert != nil || key != nil || insecurePlainHttp, redisURL: redis, auditLogOverridden: auditLog != nil,
                listenOverridden: listen != nil || adminListen != nil)
            if !problems.isEmpty {
                for problem in problems { logger.critical("configuration refused: \(problem)") }
                throw ConfigurationError("the configuration has \(problems.count) problem(s): \(problems.joined(separator: "; "))")
            }
            let file = try ConfigurationFile.load(configPath, redisURL: redis)
            logger.info(
                "configuration loaded",
                metadata: [
                    "config.file": "\(configPath)", "tenants": "\(file.identity.tenants.keys.sorted().joined(separator: ","))",
                    "jwt.tenants": "\(file.identity.tenants.values.filter { $0.jwt != nil }.count)",
                ])
            services = try GatewayAssembly.services(
                file, .init(upstream: upstream, policies: policies, auditLog: auditLog), logger: logger)
            configuration = file.gateway
        } else {
            guard upstream == nil, policies == nil, auditLog == nil, redis == nil else {
                throw ValidationError(
                    "--upstream, --policies, --audit-log and --redis need tenants: pass --config FILE (and no --client-ca or --crl, which are for a gateway without a configuration file)"
                )
            }
            configuration = GatewayConfiguration(tls: try defaultTLS())
        }
        if let listen {
            guard let address = ListenAddress(parsing: listen) else {
                throw ValidationError("--listen '\(listen)' is not HOST:PORT (IPv6 in brackets: [::1]:8443)")
            }
            configuration.listen = address
        }
        if insecurePlainHttp {
            configuration.tls = nil
            configuration.allowInsecurePlainHTTP = true
        } else if let tls = configuration.tls {
            configuration.tls = tlsFlags.apply(to: tls)
        }
        // Built now, so a bad certificate or key stops the start with a clear error; replaced on SIGHUP.
        let tlsContexts = try configuration.tls.map { TLSContextStore(try TLSContext(role: .server, configuration: $0)) }
        var running: [any Service] = [
            GatewayService(configuration: configuration, services: services, tlsContexts: tlsContexts, logger: logger)
        ]
        if let services, let configPath {
            let file = try ConfigurationFile.load(configPath, redisURL: redis)
            if let risk = file.sharedLimits?.redis.plaintextRisk { logger.warning("shared rate limits: \(risk)") }
            var admin = file.admin
            if let adminListen {
                guard let address = ListenAddress(parsing: adminListen) else {
                    throw ValidationError("--admin-listen '\(adminListen)' is not HOST:PORT")
                }
                admin = .init(listen: address, tls: admin?.tls, limits: admin?.limits ?? .init())
            }
            let adminTLS = try admin?.tls.map { TLSContextStore(try TLSContext(role: .server, configuration: $0)) }
            // SIGHUP re-reads the configuration file: identity (rotated JWT keys, JWK Sets, issuers) and TLS (the
            // certificate chain and key, the tenants' client CA bundles, the CRLs; the admin listener's certificate,
            // operator CA and CRLs), each validated before it is used.
            var prepareTLS: (@Sendable () throws -> @Sendable () -> Void)?
            if tlsContexts != nil || adminTLS != nil {
                let flags = tlsFlags
                prepareTLS = { [redis] in
                    let file = try ConfigurationFile.load(configPath, redisURL: redis)
                    // Both contexts are built before either is put in force: a reload changes both or neither.
                    var adminContext: TLSContext?
                    if adminTLS != nil {
                        guard let settings = file.admin?.tls else {
                            throw ConfigurationError("admin.tls was removed: the admin listener keeps its TLS until a restart")
                        }
                        adminContext = try TLSContext(role: .server, configuration: settings)
                    }
                    var gatewayContext: TLSContext?
                    if let store = tlsContexts, let tls = file.gateway.tls {
                        gatewayContext = try TLSContext(role: store.current.role, configuration: flags.apply(to: tls))
                    }
                    return { [gatewayContext, adminContext] in
                        if let store = tlsContexts, let gatewayContext { store.replace(with: gatewayContext) }
                        if let adminTLS, let adminContext { adminTLS.replace(with: adminContext) }
                    }
                }
            }
            let reloader = Reloader(
                engine: services.policy, identity: services.identity,
                loadAuthenticator: { [ring = services.keyFetcher?.ring, redis, running = file.identity] in
                    // What only a restart applies stays as it runs (the published resources, fetched keys, the tenants).
                    try ConfigurationFile.load(configPath, redisURL: redis).identity.holdingRestartOnlySettings(of: running)
                        .makeAuthenticator(remoteKeys: ring)
                }, audit: services.audit,
                prepareTLS: prepareTLS, metrics: services.metrics, logger: logger,
                restartOnlyChanges: { [atStart = RestartOnlySettings(path: configPath)] in
                    guard let atStart, let now = RestartOnlySettings(path: configPath) else { return nil }
                    return atStart.changes(comparedWith: now)
                },
                // The tenants of the configuration as the reload finds it (a tenant removed from it needs no policies;
                // found by review: the tenants at start were required for good, and every later reload was refused).
                requiredTenants: { [atStart = Array(file.identity.tenants.keys)] in
                    (try? ConfigurationFile.load(configPath, redisURL: redis)).map { Array($0.identity.tenants.keys) } ?? atStart
                })
            running.append(ReloadService(reloader: reloader))
            if let admin {
                if adminTLS == nil && !admin.listen.isLoopback {
                    logger.warning(
                        "the admin listener is not on loopback and has no TLS: anyone who reaches it can read metrics and reload",
                        metadata: ["admin.listen": "\(admin.listen)"])
                }
                running.append(
                    AdminService(
                        address: admin.listen, tls: adminTLS, services: services,
                        operations: .init(reload: { reloader.reload() }), limits: admin.limits, logger: logger))
            }
        } else if adminListen != nil {
            throw ValidationError("--admin-listen needs a gateway with tenants: pass --config FILE")
        }
        let group = ServiceGroup(services: running, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        do {
            try await group.run()
        } catch {
            logger.critical("mcpgw stopped: \(error)")
            throw ExitCode.failure
        }
    }

    /// The command line's TLS flags, which override the configuration file (on reload too).
    private var tlsFlags: TLSFlags { TLSFlags(cert: cert, key: key, clientAuth: clientAuth, minTLS: minTLS) }

    /// TLS flags given on the command line.
    struct TLSFlags: Sendable {
        let cert: String?
        let key: String?
        let clientAuth: TLSConfiguration.ClientAuthentication?
        let minTLS: TLSConfiguration.ProtocolVersion?

        /// `tls` with these flags applied.
        func apply(to tls: TLSConfiguration) -> TLSConfiguration {
            var tls = tls
            if let cert { tls.certificateChainFile = cert }
            if let key { tls.privateKeyFile = key }
            if let clientAuth { tls.clientAuthentication = clientAuth }
            if let minTLS { tls.minimumVersion = minTLS }
            return tls
        }
    }

    /// TLS settings from the flags alone, defaulting to the development PKI.
    private func defaultTLS() throws -> TLSConfiguration {
        let bundles = clientCAs.isEmpty ? ["acme=certs-dev/acme/ca.pem", "globex=certs-dev/globex/ca.pem"] : clientCAs
        let revocationLists = crls.isEmpty && clientCAs.isEmpty ? ["certs-dev/acme/ca.crl.pem", "certs-dev/globex/ca.crl.pem"] : crls
        return TLSConfiguration(
            certificateChainFile: cert ?? "certs-dev/server.pem", privateKeyFile: key ?? "certs-dev/server.key",
            trustedCABundles: try bundles.map(Self.bundle), clientAuthentication: .optional, crlFiles: revocationLists)
    }

    private static func bundle(_ text: String) throws -> TLSConfiguration.TrustedCABundle {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex, text.index(after: equals) != text.endIndex
        else { throw ValidationError("--client-ca '\(text)' is not TENANT=FILE") }
        return .init(label: String(text[..<equals]), path: String(text[text.index(after: equals)...]))
    }
}

extension TLSConfiguration.ClientAuthentication: ExpressibleByArgument {}
extension TLSConfiguration.ProtocolVersion: ExpressibleByArgument {}

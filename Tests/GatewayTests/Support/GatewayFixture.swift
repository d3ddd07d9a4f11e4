import Foundation
import Gateway
import Identity
import Logging
import NIOCore
import NIOPosix
import Policy
import StrictJSON
import TLS
import TestSupport

/// The real gateway on 127.0.0.1, port 0: development identity (mcpgw.dev.json), the shipped policies, an audit
/// file in a temporary folder, every tenant's upstream at `upstream`.
struct GatewayFixture {
    let listener: GatewayListener
    let services: GatewayServices
    let auditPath: String
    var port: Int { listener.localAddress.port! }

    /// `frozenClock`: rate limits see time stand still, so refills never depend on how fast a test runs.
    static func start(
        upstream: String, limits: GatewayLimits = GatewayLimits(), frozenClock: Bool = false, auditCapacityBytes: Int = 16 * 1024 * 1024,
        tenantsWithUpstream: Set<String> = ["acme", "globex"], auditSink: AuditLog.Sink? = nil, upstreamCA: String? = nil,
        upstreamCAOfTenant: [String: String] = [:],
        callTimeout: Duration? = nil, sessionKeys: [SealedBox.Key]? = nil, legacySSE: Bool = false, policies: String? = nil,
        sharedLimits: SharedLimitSettings? = nil, tasksScopedToSession: Bool = false, upstreamKeepAlive: Duration? = nil,
        configure: (inout GatewayConfiguration) -> Void = { _ in }, editConfiguration: (String) -> String = { $0 },
        group: (any EventLoopGroup)? = nil
    ) async throws -> GatewayFixture {
        let root = DevPKI.repositoryRoot
        let text = editConfiguration(String(decoding: FileManager.default.contents(atPath: root + "/mcpgw.dev.json")!, as: UTF8.self))
        let document = try JSONObjectReader(try JSONParser.parse(Array(text.utf8)))
        let identity = try IdentityConfiguration.read(
            identity: try document.object("identity"), tenants: try document.object("tenants")!, baseDirectory: root,
            otherTenantKeys: ["upstream"])
        let auditPath = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-audit-\(UUID()).log").path
        let frozen: @Sendable () -> Double = { 1_000 }
        var acme = UpstreamConfiguration(
            url: upstream, credentialHeader: "X-Upstream-Key", credentialValue: "upstream-secret", caFile: upstreamCA)
        acme.caFile = upstreamCAOfTenant["acme"] ?? upstreamCA
        acme.callTimeout = callTimeout
        acme.tasksScopedToSession = tasksScopedToSession
        acme.keepAlive = upstreamKeepAlive
        if legacySSE { acme.legacySSEURL = upstream.replacingOccurrences(of: "/mcp", with: "/sse") }
        var services = try GatewayServices(
            authenticator: try identity.makeAuthenticator(),
            policy: try PolicyEngine(directory: policies ?? root + "/policies"),
            audit: try AuditLog(sink: auditSink ?? .file(auditPath), capacityBytes: auditCapacityBytes),
            upstreams: [
                "acme": acme,
                "globex": UpstreamConfiguration(url: upstream, caFile: upstreamCAOfTenant["globex"] ?? upstreamCA),
            ].filter { tenantsWithUpstream.contains($0.key) },
            sessionHandles: sessionKeys.map { SessionHandles(box: SealedBox(keys: $0)) } ?? .singleProcess(),
            limits: Self.learnedCostsOff(limits), clock: frozenClock ? frozen : nil)
        services.oauth = identity.oauth
        if let sharedLimits { services.shareRateLimits(sharedLimits) }
        let introspection = identity.tenants.compactMapValues(\.introspection)
        if !introspection.isEmpty {
            services.introspector = try TokenIntrospector(
                settings: introspection,
                audiences: introspection.mapValues { _ in ["mcpgw"] + (identity.oauth?.tenants.values.map(\.resource) ?? []) },
                eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "introspection-test"),
                maximumTokenBytes: identity.maximumTokenBytes)
        }
        let tls = TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [
                .init(label: "acme", path: DevPKI.tenantCA("acme")), .init(label: "globex", path: DevPKI.tenantCA("globex")),
            ],
            clientAuthentication: .optional, crlFiles: [DevPKI.tenantCRL("acme"), DevPKI.tenantCRL("globex")])
        var configuration = GatewayConfiguration(listen: ListenAddress(host: "127.0.0.1", port: 0), tls: tls)
        configure(&configuration)
        let listener = try await GatewayListener.bind(
            configuration: configuration,
            services: services, logger: Logger(label: "gateway-test"), group: group ?? MultiThreadedEventLoopGroup.singleton)
        return GatewayFixture(listener: listener, services: services, auditPath: auditPath)
    }

    /// `limits`, with the learned costs of decisions and list filtering (`costlyDecision`) off unless the test set them:
    /// a debug or ASan build takes many times a release build's time, so its 64 KiB events and lists pass 5 ms, and a
    /// tenant marked costly has them wait on the decision threads behind the large calls other suites send (found in a
    /// clean-clone run: a stream of 128 such events took over 20 s). Tests of those costs set `costlyDecision`.
    static func learnedCostsOff(_ limits: GatewayLimits) -> GatewayLimits {
        var limits = limits
        if limits.costlyDecision == GatewayLimits().costlyDecision { limits.costlyDecision = .seconds(3600) }
        return limits
    }

    /// A caller of the dev PKI / tokens as a principal.
    static func principal(_ tenant: String = "acme", _ agent: String = "bot1") -> Principal {
        Principal(tenant: tenant, agent: agent, method: .jwt, scopes: [], expiresAt: nil, certificate: nil, token: nil)
    }

    /// The sealed handle this gateway would give `tenant`/`agent` for the upstream's `session`.
    func sessionHandle(_ session: String, tenant: String = "acme", agent: String = "bot1") -> String {
        services.sessionHandles.seal(session: session, for: Self.principal(tenant, agent))
    }

    /// The sealed event id this gateway would give `tenant`/`agent` for the upstream's `event` on `session`.
    func eventID(_ event: String, session: String?, tenant: String = "acme", agent: String = "bot1") -> String {
        services.sessionHandles.seal(event: event, session: session, for: Self.principal(tenant, agent))
    }

    func stop() async throws {
        try await listener.shutdown()
        await services.upstream.shutdown()
        services.sharedLimits?.shutdown()
        services.audit.close()
        try? FileManager.default.removeItem(atPath: auditPath)
    }

    /// The audit records written so far (the log is flushed first), each parsed as JSON.
    func auditRecords() throws -> [JSONObject] {
        services.audit.flush()
        let text = String(decoding: FileManager.default.contents(atPath: auditPath) ?? Data(), as: UTF8.self)
        return try text.split(separator: "\n").map { line in
            guard let object = try JSONParser.parse(String(line)).objectValue else {
                throw TestFailure("audit line is not an object: \(line)")
            }
            return object
        }
    }

    /// A client as `agent` (a certs-dev path) or without a certificate.
    func client(_ agent: String? = "acme/agents/bot1") -> TestHTTPClient { TestHTTPClient(port: port, agent: agent) }

    /// A development bearer token.
    static func token(
        tenant: String = "acme", agent: String = "bot1", scopes: [String] = ["tools:read"], lifetime: Int64 = 600,
        audience: String = "mcpgw"
    ) throws -> String {
        let key = try JWTSigningKey.privateKey(pem: Array(FileManager.default.contents(atPath: DevPKI.path("jwt/\(tenant)-rs256.key"))!))
        return try TokenMinter(key: key, keyID: "\(tenant)-rs256").mint(
            .init(
                issuer: "https://issuer.mcpgw.dev/\(tenant)", audience: audience, tenant: tenant, agent: agent, scopes: scopes,
                issuedAt: Date(), lifetimeSeconds: lifetime))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// JSON-RPC bodies for tests.
enum RPC {
    static func call(_ tool: String, _ arguments: String = "{}", id: Int = 1) -> String {
        #"{"jsonrpc":"2.0","id":\#(id),"method":"tools/call","params":{"name":"\#(tool)","arguments":\#(arguments)}}"#
    }
}

import Foundation
import Gateway
import Identity
import Logging
import NIOPosix
import Policy
import TLS

/// Builds the running gateway's services from a configuration file and command-line overrides.
enum GatewayAssembly {
    /// Overrides given on the command line.
    struct Overrides {
        var upstream: String?
        var policies: String?
        var auditLog: String?
    }

    /// Authenticator, policy engine, audit log, upstreams and HTTP client. Every file is read and validated now.
    static func services(_ file: ConfigurationFile, _ overrides: Overrides, logger: Logger) throws -> GatewayServices {
        // Keys fetched over HTTPS (jwks_uri, discovery) live in a ring the verifier reads, filled in the background.
        let remote = file.identity.tenants.compactMapValues { $0.jwt?.remoteKeys }
        let fetcher =
            remote.isEmpty
            ? nil
            : RemoteKeyFetcher(
                tenants: remote, ring: RemoteKeyRing(), eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        let authenticator = try file.identity.makeAuthenticator(remoteKeys: fetcher?.ring)
        guard let policies = overrides.policies ?? file.policies else {
            throw ConfigurationError("no policies: set \"policies\" in the configuration or pass --policies DIR|FILE")
        }
        let engine = PolicyEngine(
            snapshot: try policySnapshot(policies, tenants: Array(file.identity.tenants.keys)),
            limiter: RateLimiter(maximumBucketsPerTenant: file.limits.maximumRateLimitBucketsPerTenant))
        var upstreams = file.upstreams
        if let upstream = overrides.upstream {
            guard upstream.hasPrefix("http://") || upstream.hasPrefix("https://") else {
                throw ConfigurationError("--upstream '\(upstream)' must be an http:// or https:// URL")
            }
            for tenant in file.identity.tenants.keys {
                upstreams[tenant] = UpstreamConfiguration(
                    url: upstream, credentialHeader: upstreams[tenant]?.credentialHeader,
                    credentialValue: upstreams[tenant]?.credentialValue)
            }
        }
        for tenant in file.identity.tenants.keys.sorted() where upstreams[tenant] == nil {
            logger.warning("tenant \(tenant) has no upstream; its MCP requests will get 502 (set tenants.\(tenant).upstream or --upstream)")
        }
        if file.sessionKeys == nil {
            logger.warning(
                "sessions.keys is not set: session handles and event ids are sealed with a random key of this process; replicas cannot share sessions, and a restart ends them all"
            )
        }
        let auditTarget = overrides.auditLog ?? file.auditLog
        let audit = try AuditLog(sink: auditTarget == "-" ? .standardOutput : .file(auditTarget))
        logger.info(
            "gateway services ready",
            metadata: [
                "tenants": "\(file.identity.tenants.keys.sorted().joined(separator: ","))",
                "policy.tenants": "\(engine.snapshot.tenants.keys.sorted().joined(separator: ","))",
                "audit.log": "\(auditTarget == "-" ? "stdout" : auditTarget)", "mcp.path": "\(file.mcpPath)",
            ])
        var services = try GatewayServices(
            authenticator: authenticator, policy: engine, audit: audit, upstreams: upstreams,
            sessionHandles: file.sessionKeys.map { SessionHandles(box: SealedBox(keys: $0), lifetime: file.sessionLifetime) }
                ?? .singleProcess(),
            limits: file.limits, mcpPath: file.mcpPath, logger: logger)
        services.oauth = file.identity.oauth
        // A key withdrawn from a fetched set ends the listening streams it authenticated, as a reload would.
        fetcher?.ring.onKeysWithdrawn { [identity = services.identity] _ in identity.credentialsChanged() }
        if let shared = file.sharedLimits {
            services.shareRateLimits(shared)
            let counted = engine.snapshot.tenants.values.flatMap(\.rateLimits).filter { ($0.sharing ?? .global) == .global }.count
            logger.info(
                "rate limits shared through Redis",
                metadata: [
                    "redis": "\(shared.redis.address)", "redis.tls": "\(shared.redis.tls != nil)", "shared.limits": "\(counted)",
                    "replicas": "\(shared.replicas)", "failure_mode.default": "\(shared.defaultFailureMode.rawValue)",
                ])
        }
        services.keyFetcher = fetcher
        let introspection = file.identity.tenants.compactMapValues(\.introspection)
        if !introspection.isEmpty {
            // What an introspected token's `aud` may name: the tenant's JWT audience and its protected resources.
            let audiences = Dictionary(
                uniqueKeysWithValues: introspection.keys.map { tenant in
                    let jwt = file.identity.tenants[tenant]?.jwt
                    let resources = [file.identity.oauth?.tenants[tenant]?.resource, file.identity.oauth?.shared?.resource]
                    return (tenant, [jwt?.audience ?? file.identity.audience] + resources.compactMap { $0 })
                })
            services.introspector = try TokenIntrospector(
                settings: introspection, audiences: audiences, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger,
                maximumTokenBytes: file.identity.maximumTokenBytes)
        }
        fetcher?.start()
        return services
    }

    /// A policies directory, or a single classic policy file applied to every tenant.
    static func policySnapshot(_ path: String, tenants: [String]) throws -> PolicySnapshot {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConfigurationError("policies: \(path) does not exist")
        }
        if isDirectory.boolValue { return try PolicySnapshot.load(directory: path) }
        return try PolicySnapshot.load(file: path, tenants: tenants)
    }
}

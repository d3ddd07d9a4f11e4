import Foundation
import Gateway
import Identity
import Policy
import StrictJSON
import TLS

/// The gateway configuration file (JSON): listener, TLS, identity defaults and tenants. Unknown keys are errors,
/// relative paths are relative to the file's folder, and every referenced file is read at start-up.
struct ConfigurationFile {
    /// The listener settings.
    var gateway: GatewayConfiguration
    /// Tenants' identity settings.
    var identity: IdentityConfiguration
    /// The policies directory (or a single classic policy file), if configured.
    var policies: String?
    /// `-` for standard output, or a file path.
    var auditLog: String
    /// Upstream per tenant.
    var upstreams: [String: UpstreamConfiguration]
    /// Per-request bounds.
    var limits: GatewayLimits
    /// The MCP endpoint's path.
    var mcpPath: String
    /// Keys that seal session handles and event ids (the first seals), and a handle's lifetime; nil: a random key
    /// for this process only.
    var sessionKeys: [SealedBox.Key]?
    var sessionLifetime: Duration = .seconds(24 * 3600)
    /// The admin listener (`admin`), if configured.
    var admin: AdminSettings?
    /// Rate limits shared across replicas through Redis (`redis`, or `--redis`), if configured.
    var sharedLimits: SharedLimitSettings?

    /// Where the admin listener listens, and its TLS (client certificates required) when set.
    struct AdminSettings {
        var listen: ListenAddress
        var tls: TLSConfiguration?
        /// `admin.limits`: the listener's own connection bounds.
        var limits = AdminListener.Limits()
    }

    /// The keys of `admin.limits`.
    static let adminLimitKeys: Set<String> = [
        "max_connections", "max_connections_per_source", "idle_timeout_seconds", "request_head_timeout_seconds",
    ]

    static let topLevelKeys: Set<String> = [
        "listen", "tls", "identity", "tenants", "policies", "audit_log", "limits", "mcp_path", "sessions", "admin",
        "redis", "proxy_protocol",
    ]
    static let limitKeys: Set<String> = [
        "max_body_bytes", "max_json_depth", "max_batch_messages", "upstream_timeout_seconds", "idle_timeout_seconds",
        "shutdown_grace_seconds",
        "max_filtered_response_bytes", "max_held_response_bytes_per_tenant", "max_held_response_bytes", "max_connections",
        "max_receiving_body_bytes_per_tenant", "max_receiving_body_bytes",
        "max_connections_per_source", "upstream_connect_timeout_seconds",
        "upstream_idle_stream_timeout_seconds", "max_upstream_connections", "max_requests_per_tenant", "max_requests_per_agent",
        "max_streams_per_tenant",
        "max_streams_per_agent", "request_head_timeout_seconds", "min_body_bytes_per_second", "event_loops",
        "min_answer_bytes_per_second",
        "max_large_decisions_per_tenant", "max_rate_limit_buckets_per_tenant", "costly_decision_ms",
        "costly_decision_offload_bytes", "max_costly_decisions_per_tenant",
    ]
    static let upstreamKeys: Set<String> = [
        "url", "credential_header", "credential_file", "ca_file", "client_certificate", "client_key", "call_timeout_seconds",
        "legacy_sse_url", "tasks_scoped_to_session", "keep_alive_seconds",
    ]
    static let tlsKeys: Set<String> = [
        "certificate_chain", "private_key", "client_auth", "min_version", "verify_depth", "insecure_plain_http",
        "announce_client_cas",
    ]

    /// Loads and validates `path`; `redisURL` (the `--redis` flag) sets or overrides `redis.url`.
    static func load(_ path: String, redisURL: String? = nil) throws -> ConfigurationFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read configuration file \(path)")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            return try parse(Array(data), baseDirectory: base, redisURL: redisURL)
        } catch let error as JSONParseError {
            throw ConfigurationError("\(path): not valid JSON: \(error)")
        } catch let error as JSONFieldError {
            throw ConfigurationError("\(path): \(error)")
        }
    }

    /// Parses a configuration document.
    static func parse(_ bytes: [UInt8], baseDirectory: String, redisURL: String? = nil) throws -> ConfigurationFile {
        let root = try JSONObjectReader(try JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 32)))
        try root.requireOnlyKeys(topLevelKeys)
        guard let tenantsReader = try root.object("tenants") else {
            throw JSONFieldError(path: "tenants", reason: "is required (one object per tenant)")
        }
        let mcpPath = try root.string("mcp_path") ?? "/mcp"
        guard mcpPath.hasPrefix("/"), mcpPath != "/healthz", !mcpPath.hasPrefix("/.well-known/"), !mcpPath.hasPrefix("/tenants/")
        else {
            throw JSONFieldError(path: "mcp_path", reason: "must start with / and not be /healthz, /.well-known/… or /tenants/…")
        }
        guard mcpPath.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0 != "?" && $0 != "#" && $0 != "%" }) else {
            throw JSONFieldError(path: "mcp_path", reason: "must be a plain path: visible ASCII without spaces, ?, # or %")
        }
        let identity = try IdentityConfiguration.read(
            identity: try root.object("identity"), tenants: tenantsReader, baseDirectory: baseDirectory,
            otherTenantKeys: ["upstream", "redis_failure_mode"], mcpPath: mcpPath)
        let resolve = { (path: String) in path.hasPrefix("/") ? path : baseDirectory + "/" + path }
        var upstreams: [String: UpstreamConfiguration] = [:]
        for (tenant, reader) in try tenantsReader.objectMembers() {
            guard let upstream = try reader.object("upstream") else { continue }
            try upstream.requireOnlyKeys(upstreamKeys)
            let url = try upstream.requiredString("url")
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw JSONFieldError(path: upstream.fieldPath("url"), reason: "must be an http:// or https:// URL")
            }
            var configuration = UpstreamConfiguration(
                url: url, credentialHeader: try upstream.string("credential_header"), caFile: try upstream.string("ca_file").map(resolve),
                clientCertificateFile: try upstream.string("client_certificate").map(resolve),
                clientKeyFile: try upstream.string("client_key").map(resolve))
            if let legacy = try upstream.string("legacy_sse_url") {
                guard legacy.hasPrefix("http://") || legacy.hasPrefix("https://") else {
                    throw JSONFieldError(path: upstream.fieldPath("legacy_sse_url"), reason: "must be an http:// or https:// URL")
                }
                configuration.legacySSEURL = legacy
            }
            configuration.tasksScopedToSession = try upstream.bool("tasks_scoped_to_session") ?? false
            if let seconds = try upstream.int("call_timeout_seconds") {
                guard seconds > 0 else {
                    throw JSONFieldError(path: upstream.fieldPath("call_timeout_seconds"), reason: "must be positive")
                }
                configuration.callTimeout = .seconds(seconds)
            }
            if let seconds = try upstream.int("keep_alive_seconds", in: 0...3600) { configuration.keepAlive = .seconds(seconds) }
            if (configuration.clientCertificateFile == nil) != (configuration.clientKeyFile == nil) {
                throw JSONFieldError(
                    path: upstream.fieldPath("client_certificate"), reason: "needs client_key too (and the other way round)")
            }
            if let header = configuration.credentialHeader, let problem = UpstreamConfiguration.credentialHeaderProblem(header) {
                throw JSONFieldError(path: upstream.fieldPath("credential_header"), reason: problem)
            }
            if let file = try upstream.string("credential_file") {
                guard configuration.credentialHeader != nil else {
                    throw JSONFieldError(path: upstream.fieldPath("credential_file"), reason: "needs credential_header")
                }
                guard let data = FileManager.default.contents(atPath: resolve(file)) else {
                    throw JSONFieldError(path: upstream.fieldPath("credential_file"), reason: "cannot read \(resolve(file))")
                }
                let value = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if let problem = UpstreamConfiguration.credentialValueProblem(value) {
                    throw JSONFieldError(path: upstream.fieldPath("credential_file"), reason: "\(resolve(file)) \(problem)")
                }
                configuration.credentialValue = value
            }
            upstreams[tenant] = configuration
        }
        var limits = GatewayLimits()
        var idleSeconds = 60, graceSeconds = 10, maximumConnections = 1024
        var perSource: Int?, eventLoops: Int?
        if let reader = try root.object("limits") {
            try reader.requireOnlyKeys(limitKeys)
            func positive(_ key: String) throws -> Int? {
                guard let value = try reader.int(key) else { return nil }
                guard value > 0 else { throw JSONFieldError(path: reader.fieldPath(key), reason: "must be positive") }
                return value
            }
            limits.maximumBodyBytes = try positive("max_body_bytes") ?? limits.maximumBodyBytes
            // Nesting is parsed and walked recursively: deeper than this would risk a thread's stack.
            limits.maximumJSONDepth = try reader.int("max_json_depth", in: 1...512) ?? limits.maximumJSONDepth
            limits.maximumBatchMessages = try reader.int("max_batch_messages", in: 1...4096) ?? limits.maximumBatchMessages
            limits.upstreamTimeout = .seconds(try positive("upstream_timeout_seconds") ?? 30)
            limits.maximumFilteredResponseBytes = try positive("max_filtered_response_bytes") ?? limits.maximumFilteredResponseBytes
            limits.maximumHeldResponseBytesPerTenant =
                try positive("max_held_response_bytes_per_tenant") ?? limits.maximumHeldResponseBytesPerTenant
            limits.maximumHeldResponseBytes = try positive("max_held_response_bytes") ?? limits.maximumHeldResponseBytes
            limits.maximumReceivingBodyBytesPerTenant =
                try positive("max_receiving_body_bytes_per_tenant") ?? limits.maximumReceivingBodyBytesPerTenant
            limits.maximumReceivingBodyBytes = try positive("max_receiving_body_bytes") ?? limits.maximumReceivingBodyBytes
            // A body the configuration allows must fit in the budgets of bodies being received, or it never could be.
            let largestCharged = limits.maximumBodyBytes - GatewayLimits.unchargedBodyBytes
            for (key, value) in [
                ("max_receiving_body_bytes_per_tenant", limits.maximumReceivingBodyBytesPerTenant),
                ("max_receiving_body_bytes", limits.maximumReceivingBodyBytes),
            ] where value < largestCharged {
                throw JSONFieldError(
                    path: reader.fieldPath(key),
                    reason:
                        "is \(value), below max_body_bytes (\(limits.maximumBodyBytes)) less the first \(GatewayLimits.unchargedBodyBytes) bytes of each body, which are not counted: a body of max_body_bytes could never be received (raise it to at least \(largestCharged))"
                )
            }
            idleSeconds = try positive("idle_timeout_seconds") ?? idleSeconds
            graceSeconds = try positive("shutdown_grace_seconds") ?? graceSeconds
            maximumConnections = try positive("max_connections") ?? maximumConnections
            perSource = try positive("max_connections_per_source")
            eventLoops = try reader.int("event_loops", in: 1...1024)
            if let seconds = try positive("upstream_connect_timeout_seconds") { limits.upstreamConnectTimeout = .seconds(seconds) }
            if let seconds = try positive("upstream_idle_stream_timeout_seconds") { limits.upstreamIdleStreamTimeout = .seconds(seconds) }
            if let seconds = try positive("request_head_timeout_seconds") { limits.requestHeadTimeout = .seconds(seconds) }
            limits.maximumUpstreamConnections = try positive("max_upstream_connections") ?? limits.maximumUpstreamConnections
            limits.maximumRequestsPerTenant = try positive("max_requests_per_tenant") ?? limits.maximumRequestsPerTenant
            limits.maximumRequestsPerAgent = try positive("max_requests_per_agent") ?? limits.maximumRequestsPerAgent
            limits.maximumStreamsPerTenant = try positive("max_streams_per_tenant") ?? limits.maximumStreamsPerTenant
            limits.maximumStreamsPerAgent = try positive("max_streams_per_agent") ?? limits.maximumStreamsPerAgent
            limits.minimumBodyBytesPerSecond = try positive("min_body_bytes_per_second") ?? limits.minimumBodyBytesPerSecond
            limits.minimumAnswerBytesPerSecond = try positive("min_answer_bytes_per_second") ?? limits.minimumAnswerBytesPerSecond
            limits.maximumLargeDecisionsPerTenant =
                try positive("max_large_decisions_per_tenant") ?? limits.maximumLargeDecisionsPerTenant
            limits.maximumRateLimitBucketsPerTenant =
                try positive("max_rate_limit_buckets_per_tenant") ?? limits.maximumRateLimitBucketsPerTenant
            if let milliseconds = try reader.int("costly_decision_ms", in: 1...10_000) {
                limits.costlyDecision = .milliseconds(milliseconds)
            }
            limits.costlyDecisionOffloadBytes =
                try reader.int("costly_decision_offload_bytes", in: 1...(64 * 1024 * 1024)) ?? limits.costlyDecisionOffloadBytes
            limits.maximumCostlyDecisionsPerTenant =
                try positive("max_costly_decisions_per_tenant") ?? limits.maximumCostlyDecisionsPerTenant
        }

        var listen = ListenAddress(host: "127.0.0.1", port: 8443)
        if let text = try root.string("listen") {
            guard let parsed = ListenAddress(parsing: text) else {
                throw JSONFieldError(path: "listen", reason: "'\(text)' is not HOST:PORT")
            }
            listen = parsed
        }
        guard let tlsReader = try root.object("tls") else { throw JSONFieldError(path: "tls", reason: "is required") }
        try tlsReader.requireOnlyKeys(tlsKeys)
        let insecure = try tlsReader.bool("insecure_plain_http") ?? false
        if insecure, let unused = tlsKeys.sorted().first(where: { $0 != "insecure_plain_http" && tlsReader.object[$0] != nil }) {
            // Plain HTTP with a certificate or client authentication configured reads as TLS (or mTLS) to whoever
            // reviews the file: said, not ignored.
            throw JSONFieldError(
                path: "tls.insecure_plain_http", reason: "is true, so tls.\(unused) would be ignored: remove one or the other")
        }
        var tls: TLSConfiguration?
        if !insecure {
            var configuration = TLSConfiguration(
                certificateChainFile: resolve(try tlsReader.requiredString("certificate_chain")),
                privateKeyFile: resolve(try tlsReader.requiredString("private_key")))
            if let mode = try tlsReader.string("client_auth") {
                guard let parsed = TLSConfiguration.ClientAuthentication(rawValue: mode) else {
                    throw JSONFieldError(path: "tls.client_auth", reason: "must be none, optional or required")
                }
                configuration.clientAuthentication = parsed
            } else {
                configuration.clientAuthentication = .optional
            }
            if let version = try tlsReader.string("min_version") {
                guard let parsed = TLSConfiguration.ProtocolVersion(rawValue: version) else {
                    throw JSONFieldError(path: "tls.min_version", reason: "must be TLSv1.2 or TLSv1.3")
                }
                configuration.minimumVersion = parsed
            }
            configuration.verifyDepth = try tlsReader.int("verify_depth", in: 1...32) ?? configuration.verifyDepth
            configuration.announcesClientCAs = try tlsReader.bool("announce_client_cas") ?? true
            // Client certificates are trusted per tenant: each tenant's bundles are labelled with its id.
            for (tenant, settings) in identity.tenants.sorted(by: { $0.key < $1.key }) {
                configuration.trustedCABundles += settings.clientCABundles.map { .init(label: tenant, path: $0) }
                configuration.crlFiles += settings.crlFiles
            }
            if configuration.trustedCABundles.isEmpty {
                // Nothing could verify a client certificate: `required` would let no one in, and silently weakening it
                // to none (found by review) would let in callers the operator meant to refuse.
                guard configuration.clientAuthentication != .required else {
                    throw JSONFieldError(
                        path: "tls.client_auth",
                        reason: "required, but no tenant has client_ca: list the CAs that sign client certificates under a tenant")
                }
                configuration.clientAuthentication = .none
            }
            tls = configuration
        }
        let audit = try root.string("audit_log") ?? "-"
        // An empty name, or one ending in '/', names no file (found by review: "" crashed the check).
        guard !audit.isEmpty, !audit.hasSuffix("/") else {
            throw JSONFieldError(path: "audit_log", reason: "must name a file, or be \"-\" for standard output")
        }
        var sessionKeys: [SealedBox.Key]?
        var sessionLifetime = Duration.seconds(24 * 3600)
        if let sessions = try root.object("sessions") {
            try sessions.requireOnlyKeys(["keys", "lifetime_seconds"])
            if let seconds = try sessions.int("lifetime_seconds", in: 1...366 * 24 * 3600) {
                sessionLifetime = .seconds(seconds)
            }
            var keys: [SealedBox.Key] = []
            for (index, entry) in (try sessions.objects("keys") ?? []).enumerated() {
                try entry.requireOnlyKeys(["id", "secret_file"])
                let id = try entry.requiredString("id")
                let file = resolve(try entry.requiredString("secret_file"))
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw JSONFieldError(path: "sessions.keys[\(index)].secret_file", reason: "cannot read \(file)")
                }
                // 32 random bytes, written as 64 hex digits or base64 (e.g. `openssl rand -hex 32`).
                let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                let bytes = HexDigit.bytes(text) ?? Data(base64Encoded: text).map(Array.init)
                guard let bytes, let key = SealedBox.Key(id: id, bytes: bytes) else {
                    throw JSONFieldError(
                        path: "sessions.keys[\(index)]",
                        reason: "needs an id of 1-32 letters, digits, - or _, and a secret_file with 32 bytes as 64 hex digits or base64")
                }
                guard !keys.contains(where: { $0.id == id }) else {
                    throw JSONFieldError(path: "sessions.keys[\(index)].id", reason: "duplicate key id '\(id)'")
                }
                keys.append(key)
            }
            guard !keys.isEmpty else { throw JSONFieldError(path: "sessions.keys", reason: "needs at least one key") }
            sessionKeys = keys
        }
        var admin: AdminSettings?
        if let reader = try root.object("admin") {
            try reader.requireOnlyKeys(["listen", "tls", "limits"])
            let text = try reader.string("listen") ?? "127.0.0.1:9464"
            guard let address = ListenAddress(parsing: text) else {
                throw JSONFieldError(path: "admin.listen", reason: "'\(text)' is not HOST:PORT")
            }
            var settings = AdminSettings(listen: address)
            if let limits = try reader.object("limits") { settings.limits = try Self.adminLimits(limits) }
            if let tlsSettings = try reader.object("tls") {
                try tlsSettings.requireOnlyKeys(["certificate_chain", "private_key", "client_ca", "crl"])
                // Operators only: a client certificate from the admin CA is required (and, with CRLs, not revoked), checked
                // in full on every connection (no resumed sessions: the admin handler has no principal to re-verify).
                settings.tls = TLSConfiguration(
                    certificateChainFile: resolve(try tlsSettings.requiredString("certificate_chain")),
                    privateKeyFile: resolve(try tlsSettings.requiredString("private_key")),
                    trustedCABundles: [.init(label: "admin", path: resolve(try tlsSettings.requiredString("client_ca")))],
                    clientAuthentication: .required, resumesSessions: false,
                    crlFiles: (try tlsSettings.strings("crl") ?? []).map(resolve))
            }
            admin = settings
        }
        let proxyProtocol = try Self.proxyProtocol(try root.object("proxy_protocol"))
        let sharedLimits = try RedisSection.read(try root.object("redis"), url: redisURL, tenants: tenantsReader, resolve: resolve)
        return ConfigurationFile(
            gateway: GatewayConfiguration(
                listen: listen, tls: tls, allowInsecurePlainHTTP: insecure, idleTimeout: .seconds(idleSeconds),
                shutdownGracePeriod: .seconds(graceSeconds), maximumConnections: maximumConnections,
                maximumConnectionsPerSource: perSource, eventLoopThreads: eventLoops, proxyProtocol: proxyProtocol),
            identity: identity, policies: try root.string("policies").map(resolve),
            auditLog: audit == "-" ? "-" : resolve(audit), upstreams: upstreams, limits: limits, mcpPath: mcpPath,
            sessionKeys: sessionKeys, sessionLifetime: sessionLifetime, admin: admin, sharedLimits: sharedLimits)
    }

    /// `proxy_protocol`: the load balancers whose connections start with a PROXY protocol header
    /// (`trusted_proxies`, addresses or CIDR ranges; at least one).
    static func proxyProtocol(_ reader: JSONObjectReader?) throws(JSONFieldError) -> ProxyProtocolSettings? {
        guard let reader else { return nil }
        try reader.requireOnlyKeys(["trusted_proxies"])
        guard let texts = try reader.strings("trusted_proxies"), !texts.isEmpty else {
            throw JSONFieldError(
                path: "proxy_protocol.trusted_proxies", reason: "is required: the addresses or ranges of the load balancers")
        }
        var ranges: [AddressRange] = []
        for (index, text) in texts.enumerated() {
            do {
                ranges.append(try AddressRange(parsing: text))
            } catch {
                throw JSONFieldError(path: "proxy_protocol.trusted_proxies[\(index)]", reason: error.description)
            }
        }
        return ProxyProtocolSettings(trustedProxies: ranges)
    }

    /// `admin.limits`, each bound within what one process can hold (`max_connections_per_source` no more than
    /// `max_connections`); the defaults for what is not given.
    static func adminLimits(_ reader: JSONObjectReader) throws(JSONFieldError) -> AdminListener.Limits {
        try reader.requireOnlyKeys(adminLimitKeys)
        var limits = AdminListener.Limits()
        limits.maximumConnections = try reader.int("max_connections", in: 1...65_536) ?? limits.maximumConnections
        if let perSource = try reader.int("max_connections_per_source", in: 1...65_536) {
            guard perSource <= limits.maximumConnections else {
                throw JSONFieldError(
                    path: reader.fieldPath("max_connections_per_source"),
                    reason: "must be at most max_connections (\(limits.maximumConnections); got \(perSource))")
            }
            limits.maximumConnectionsPerSource = perSource
        } else {
            limits.maximumConnectionsPerSource = min(limits.maximumConnectionsPerSource, limits.maximumConnections)
        }
        if let seconds = try reader.int("idle_timeout_seconds", in: 1...86_400) { limits.idleTimeout = .seconds(Int64(seconds)) }
        if let seconds = try reader.int("request_head_timeout_seconds", in: 1...3_600) {
            limits.requestHeadTimeout = .seconds(Int64(seconds))
        }
        return limits
    }
}

/// A configuration problem, said in words that name the file and the setting.
struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

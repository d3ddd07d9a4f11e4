public import Identity
public import Logging
public import Policy
public import ServiceLifecycle
public import StrictJSON
import Synchronization
import UnixSignals

/// What a reload did, part by part: policies, identity, TLS, the audit file.
public struct ReloadReport: Sendable {
    /// One part's outcome.
    public struct Part: Sendable {
        /// `policies`, `identity`, `tls`, `audit_log` or `restart_only_settings`.
        public let name: String
        /// Whether the new settings are in force (otherwise the previous ones still are).
        public let succeeded: Bool
        /// What changed, or why it was refused.
        public let detail: String
    }

    /// The parts, in the order they were reloaded.
    public var parts: [Part] = []

    /// Whether every part succeeded.
    public var succeeded: Bool { parts.allSatisfy(\.succeeded) }

    /// `{"reloaded": bool, "parts": {"policies": {"ok": …, "detail": …}, …}}`.
    public var json: JSONValue {
        .object(
            JSONObject([
                .init(key: "reloaded", value: .bool(succeeded)),
                .init(
                    key: "parts",
                    value: .object(
                        JSONObject(
                            parts.map { part in
                                .init(
                                    key: part.name,
                                    value: .object(
                                        JSONObject([
                                            .init(key: "ok", value: .bool(part.succeeded)),
                                            .init(key: "detail", value: .string(part.detail)),
                                        ])))
                            }))),
            ]))
    }
}

/// Reloads the policies, (when given) the identity settings — JWT keys, JWK Sets, issuers — so that a rotated key is
/// accepted without a restart, the audit log file (reopened by path, for log rotation) and, with `prepareTLS`, the
/// listener's certificate chain and key, the tenants' client CA bundles and the CRLs (for new handshakes; open
/// connections with a client certificate have it checked again on their next request). Each part is validated on the
/// side and swapped in whole; an invalid one is refused and logged, and the previous one keeps serving. Identity and
/// TLS go together: both say who a tenant's agents are (its CAs in TLS, how a certificate names an agent in identity),
/// so when either is refused neither is applied. SIGHUP and the admin listener's `POST /reload` both run it.
public struct Reloader: Sendable {
    let engine: PolicyEngine
    let audit: AuditLog?
    let identity: AuthenticatorStore?
    let loadAuthenticator: (@Sendable () throws -> Authenticator)?
    let prepareTLS: (@Sendable () throws -> @Sendable () -> Void)?
    let metrics: GatewayMetrics?
    let logger: Logger
    /// The settings of the configuration file a reload does not apply that changed since start (nil: unknown).
    let restartOnlyChanges: (@Sendable () -> [String]?)?
    /// Tenants of the configuration, read at each reload: a policy reload that has none for one of them is refused,
    /// as start-up is.
    let requiredTenants: @Sendable () -> [String]

    /// A reloader of `engine`, of the authenticator in `identity` (built by `loadAuthenticator`), of `audit`'s file and,
    /// with `prepareTLS`, of the listeners' TLS settings (`prepareTLS` builds and checks them, and returns what puts
    /// them in force); `restartOnlyChanges` names the settings edited in the file that only a restart applies
    /// (reported as a refused part, so that nobody is told they are in force; `loadAuthenticator` holds those it is
    /// built from at their running values); a policy reload without policies for one of `requiredTenants` is refused.
    public init(
        engine: PolicyEngine, identity: AuthenticatorStore? = nil, loadAuthenticator: (@Sendable () throws -> Authenticator)? = nil,
        audit: AuditLog? = nil, prepareTLS: (@Sendable () throws -> @Sendable () -> Void)? = nil, metrics: GatewayMetrics? = nil,
        logger: Logger, restartOnlyChanges: (@Sendable () -> [String]?)? = nil,
        requiredTenants: @escaping @Sendable () -> [String] = { [] }
    ) {
        self.requiredTenants = requiredTenants
        self.engine = engine
        self.audit = audit
        self.identity = identity
        self.loadAuthenticator = loadAuthenticator
        self.prepareTLS = prepareTLS
        self.metrics = metrics
        self.logger = logger
        self.restartOnlyChanges = restartOnlyChanges
    }

    /// Reloads every part; reports what changed. Failures are logged once each (reloads are rare).
    public func reload() -> ReloadReport {
        // One reload at a time in the process (SIGHUP and `POST /reload` alike): two side by side could swap an
        // older snapshot in after a newer one.
        Self.serial.withLock { _ in reloadNow() }
    }

    private static let serial = Mutex(())

    private func reloadNow() -> ReloadReport {
        var report = ReloadReport()
        let before = engine.snapshot
        do {
            let snapshot = try engine.reload(requiring: requiredTenants())
            metrics?.policiesReloaded(snapshot)
            let detail = Self.policyChanges(before, snapshot)
            logger.notice("policies reloaded", metadata: ["policy.tenants": "\(snapshot.tenants.count)", "policy.changes": "\(detail)"])
            report.parts.append(.init(name: "policies", succeeded: true, detail: detail))
        } catch {
            logger.error("policy reload refused; the previous policies stay in force", metadata: ["error": "\(error)"])
            report.parts.append(.init(name: "policies", succeeded: false, detail: "refused, previous policies in force: \(error)"))
        }
        // Identity and TLS are both built before either is put in force: a reload changes both or neither.
        var authenticator: Result<Authenticator, any Error>?
        if identity != nil, let loadAuthenticator { authenticator = Result { try loadAuthenticator() } }
        var commitTLS: Result<@Sendable () -> Void, any Error>?
        if let prepareTLS { commitTLS = Result { try prepareTLS() } }
        let identityRefused: (any Error)? = if case .failure(let error) = authenticator { error } else { nil }
        let tlsRefused: (any Error)? = if case .failure(let error) = commitTLS { error } else { nil }
        if let identity, let authenticator {
            switch authenticator {
            case .success(let fresh) where tlsRefused == nil:
                identity.replace(with: fresh)
                logger.notice("identity settings reloaded (JWT keys, JWK Sets, issuers)")
                report.parts.append(.init(name: "identity", succeeded: true, detail: "JWT keys, JWK Sets and issuers re-read"))
            case .success:
                logger.error("identity reload not applied: the TLS part was refused, and the two change together")
                report.parts.append(
                    .init(
                        name: "identity", succeeded: false,
                        detail: "valid, but not applied: the TLS part was refused and the two change together; previous keys in force"))
            case .failure(let error):
                logger.error("identity reload refused; the previous keys stay in force", metadata: ["error": "\(error)"])
                report.parts.append(.init(name: "identity", succeeded: false, detail: "refused, previous keys in force: \(error)"))
            }
        }
        if let commitTLS {
            switch commitTLS {
            case .success(let commit) where identityRefused == nil:
                commit()
                logger.notice("TLS reloaded (certificate chain, key, client CA bundles, CRLs)")
                report.parts.append(.init(name: "tls", succeeded: true, detail: "certificate chain, key, client CAs and CRLs re-read"))
            case .success:
                logger.error("TLS reload not applied: the identity part was refused, and the two change together")
                report.parts.append(
                    .init(
                        name: "tls", succeeded: false,
                        detail:
                            "valid, but not applied: the identity part was refused and the two change together; previous TLS settings in force"
                    ))
            case .failure(let error):
                logger.error("TLS reload refused; the previous certificate and trust stay in force", metadata: ["error": "\(error)"])
                report.parts.append(.init(name: "tls", succeeded: false, detail: "refused, previous TLS settings in force: \(error)"))
            }
        }
        if let audit {
            do {
                try audit.reopen()
                report.parts.append(.init(name: "audit_log", succeeded: true, detail: "reopened"))
            } catch {
                logger.error("audit log could not be reopened; writing on to the old file", metadata: ["error": "\(error)"])
                report.parts.append(.init(name: "audit_log", succeeded: false, detail: "not reopened: \(error)"))
            }
        }
        if let restartOnlyChanges, let changes = restartOnlyChanges() {
            if changes.isEmpty {
                report.parts.append(.init(name: "restart_only_settings", succeeded: true, detail: "unchanged"))
            } else {
                let list = changes.prefix(20).joined(separator: ", ") + (changes.count > 20 ? ", …" : "")
                logger.warning("configuration changed in settings only a restart applies", metadata: ["changed": "\(list)"])
                report.parts.append(
                    .init(
                        name: "restart_only_settings", succeeded: false,
                        detail: "changed in the file but applied only by a restart (the running values stay in force): \(list)"))
            }
        }
        metrics?.reloaded(success: report.succeeded)
        return report
    }

    /// Tenants added and removed, and each remaining tenant's rules added and removed (`unchanged` when none).
    static func policyChanges(_ before: PolicySnapshot, _ after: PolicySnapshot) -> String {
        var changes: [String] = []
        let added = Set(after.tenants.keys).subtracting(before.tenants.keys).sorted()
        let removed = Set(before.tenants.keys).subtracting(after.tenants.keys).sorted()
        if !added.isEmpty { changes.append("tenants added: \(added.joined(separator: ", "))") }
        if !removed.isEmpty { changes.append("tenants removed: \(removed.joined(separator: ", "))") }
        for tenant in Set(after.tenants.keys).intersection(before.tenants.keys).sorted() {
            let old = before.tenants[tenant]!.ruleIDs
            let new = after.tenants[tenant]!.ruleIDs
            let plus = new.subtracting(old).sorted()
            let minus = old.subtracting(new).sorted()
            if !plus.isEmpty { changes.append("\(tenant): rules added \(plus.joined(separator: ", "))") }
            if !minus.isEmpty { changes.append("\(tenant): rules removed \(minus.joined(separator: ", "))") }
        }
        return changes.isEmpty ? "rule ids unchanged (rules re-read)" : changes.joined(separator: "; ")
    }
}

/// Runs the `Reloader` on SIGHUP.
public struct ReloadService: Service {
    private let reloader: Reloader

    /// A service reloading with `reloader` on SIGHUP.
    public init(reloader: Reloader) { self.reloader = reloader }

    /// A service reloading `engine`, with `loadAuthenticator` the authenticator in `identity`, and reopening
    /// `audit`, on SIGHUP.
    public init(
        engine: PolicyEngine, identity: AuthenticatorStore? = nil, loadAuthenticator: (@Sendable () throws -> Authenticator)? = nil,
        audit: AuditLog? = nil, prepareTLS: (@Sendable () throws -> @Sendable () -> Void)? = nil, logger: Logger
    ) {
        reloader = Reloader(
            engine: engine, identity: identity, loadAuthenticator: loadAuthenticator, audit: audit, prepareTLS: prepareTLS, logger: logger)
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            _ = reloader.reload()
        }
    }
}

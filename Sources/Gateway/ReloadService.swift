public import Identity
public import Logging
public import Policy
public import ServiceLifecycle
import UnixSignals

/// Reloads on SIGHUP: the policies, (when given) the identity settings — JWT keys, JWK Sets, issuers — so that a
/// rotated key is accepted without a restart, and the audit log file (reopened by path, for log rotation). Each part
/// is validated on the side and swapped in whole; an invalid one is refused and logged, and the previous one keeps
/// serving. With `reloadTLS`, also the listener's certificate chain and key, the tenants' client CA bundles and the
/// CRLs (for new handshakes; established connections keep theirs).
public struct ReloadService: Service {
    private let engine: PolicyEngine
    private let audit: AuditLog?
    private let identity: AuthenticatorStore?
    private let loadAuthenticator: (@Sendable () throws -> Authenticator)?
    private let reloadTLS: (@Sendable () throws -> Void)?
    private let logger: Logger

    /// A service reloading `engine`, with `loadAuthenticator` the authenticator in `identity`, and reopening
    /// `audit`, on SIGHUP.
    public init(
        engine: PolicyEngine, identity: AuthenticatorStore? = nil, loadAuthenticator: (@Sendable () throws -> Authenticator)? = nil,
        audit: AuditLog? = nil, reloadTLS: (@Sendable () throws -> Void)? = nil, logger: Logger
    ) {
        self.reloadTLS = reloadTLS
        self.engine = engine
        self.audit = audit
        self.identity = identity
        self.loadAuthenticator = loadAuthenticator
        self.logger = logger
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                let snapshot = try engine.reload()
                logger.notice(
                    "policies reloaded",
                    metadata: ["policy.tenants": "\(snapshot.tenants.count)", "policy.directory": "\(snapshot.directory)"])
            } catch {
                logger.error("policy reload refused; the previous policies stay in force: \(error)")
            }
            if let identity, let loadAuthenticator {
                do {
                    identity.replace(with: try loadAuthenticator())
                    logger.notice("identity settings reloaded (JWT keys, JWK Sets, issuers)")
                } catch {
                    logger.error("identity reload refused; the previous keys stay in force: \(error)")
                }
            }
            if let reloadTLS {
                do {
                    try reloadTLS()
                    logger.notice("TLS reloaded (certificate chain, key, client CA bundles, CRLs) for new connections")
                } catch {
                    logger.error("TLS reload refused; the previous certificate and trust stay in force: \(error)")
                }
            }
            do {
                try audit?.reopen()
            } catch {
                logger.error("audit log could not be reopened; writing on to the old file: \(error)")
            }
        }
    }
}

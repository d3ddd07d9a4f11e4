public import Logging
public import Identity
public import Policy
public import ServiceLifecycle
import UnixSignals

/// Reloads on SIGHUP: the policies, and (when given) the identity settings — JWT keys, JWK Sets, issuers — so that
/// a rotated key is accepted without a restart. Each part is validated on the side and swapped in whole; an invalid
/// one is refused and logged, and the previous one keeps serving. TLS trust anchors are not reloaded.
public struct PolicyReloadService: Service {
    private let engine: PolicyEngine
    private let identity: AuthenticatorStore?
    private let loadAuthenticator: (@Sendable () throws -> Authenticator)?
    private let logger: Logger

    /// A service reloading `engine` and, with `loadAuthenticator`, the authenticator in `identity`, on SIGHUP.
    public init(
        engine: PolicyEngine, identity: AuthenticatorStore? = nil, loadAuthenticator: (@Sendable () throws -> Authenticator)? = nil,
        logger: Logger
    ) {
        self.engine = engine
        self.identity = identity
        self.loadAuthenticator = loadAuthenticator
        self.logger = logger
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                let snapshot = try engine.reload()
                logger.notice("policies reloaded", metadata: ["policy.tenants": "\(snapshot.tenants.count)", "policy.directory": "\(snapshot.directory)"])
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
        }
    }
}

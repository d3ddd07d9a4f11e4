public import Logging
public import Policy
public import ServiceLifecycle
import UnixSignals

/// Reloads the policies on SIGHUP: a valid new snapshot is swapped in; an invalid one is refused and logged, and
/// the previous snapshot keeps serving.
public struct PolicyReloadService: Service {
    private let engine: PolicyEngine
    private let logger: Logger

    /// A service reloading `engine` on SIGHUP.
    public init(engine: PolicyEngine, logger: Logger) {
        self.engine = engine
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
        }
    }
}

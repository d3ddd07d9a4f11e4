import Synchronization

/// The signing keys fetched over HTTPS, per tenant, as the verifier reads them. The gateway's fetchers replace a
/// tenant's set as a whole when a fetch succeeds and leave it alone when one fails, so the last good set stays in
/// force. It outlives reloads: a new verifier built on SIGHUP reads the same ring.
public final class RemoteKeyRing: Sendable {
    private let sets = Mutex<[String: [JWTVerificationKey]]>([:])

    /// An empty ring.
    public init() {}

    /// The keys fetched for `tenant` (empty before the first successful fetch).
    public func keys(for tenant: String) -> [JWTVerificationKey] { sets.withLock { $0[tenant] ?? [] } }

    /// Puts `keys` in force for `tenant`.
    public func replace(_ keys: [JWTVerificationKey], for tenant: String) { sets.withLock { $0[tenant] = keys } }
}

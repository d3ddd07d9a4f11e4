public import Identity
import Synchronization

/// The authenticator in force, replaceable as a whole on reload (new keys, JWKS, issuers) while requests read it.
public final class AuthenticatorStore: Sendable {
    private let current: Mutex<Authenticator>

    /// A store serving `authenticator`.
    public init(_ authenticator: Authenticator) { current = Mutex(authenticator) }

    /// The authenticator to use for one request.
    public var authenticator: Authenticator { current.withLock { $0 } }

    /// Swaps in `authenticator` for all later requests.
    public func replace(with authenticator: Authenticator) { current.withLock { $0 = authenticator } }
}

public import Identity
import Synchronization

/// The authenticator in force, replaceable as a whole on reload (new keys, JWKS, issuers) while requests read it.
public final class AuthenticatorStore: Sendable {
    private let current: Mutex<Authenticator>
    private let observers = Mutex<[@Sendable () -> Void]>([])

    /// A store serving `authenticator`.
    public init(_ authenticator: Authenticator) { current = Mutex(authenticator) }

    /// The authenticator to use for one request.
    public var authenticator: Authenticator { current.withLock { $0 } }

    /// Swaps in `authenticator` for all later requests, and tells the observers.
    public func replace(with authenticator: Authenticator) {
        current.withLock { $0 = authenticator }
        credentialsChanged()
    }

    /// Tells the observers that credentials accepted before may no longer be (a key withdrawn from a fetched set).
    public func credentialsChanged() {
        for observer in observers.withLock({ $0 }) { observer() }
    }

    /// Calls `observer` after each change of what is accepted (so that a listening stream, authenticated once, is
    /// checked again without waiting for a next request it never makes).
    public func onChange(_ observer: @escaping @Sendable () -> Void) {
        observers.withLock { $0.append(observer) }
    }
}

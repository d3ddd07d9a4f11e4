public import Identity
public import Logging
public import NIOCore
import NIOHTTP1
import StrictJSON
import Synchronization

/// Keeps tenants' token signing keys current from their identity providers over HTTPS (`RemoteKeySettings`):
/// finds the JWKS (a configured URL, or the issuer's metadata), fetches it, and puts its keys in the `RemoteKeyRing`
/// the verifier reads.
///
/// - A set is used as long as the JWKS server's `Cache-Control: max-age` says (bounded), and refreshed in the
///   background before it runs out.
/// - A token with an unknown `kid` may cause a refetch, at most once every `minimumRefetchSeconds` per tenant,
///   however many such tokens arrive; callers during a fetch wait for that fetch.
/// - A failed fetch changes nothing: the last good set stays in force, and the fetch is retried later.
/// - Only configured URLs and the `jwks_uri` of the configured issuer's metadata are fetched; nothing a token says
///   (`jku`, `x5u`, `iss`) ever becomes a URL. Redirects are refused, answers are bounded.
public final class RemoteKeyFetcher: Sendable {
    /// One tenant's fetching state.
    private struct State {
        var settings: RemoteKeySettings
        /// The JWKS URL in use (discovered ones are remembered).
        var jwksURL: String?
        /// When the last fetch started (monotonic seconds), for the refetch rate.
        var lastStart: Double = -.infinity
        /// The fetch in progress, which callers join.
        var inFlight: EventLoopFuture<Bool>?
        /// Fetches done, and failed (for logs and tests).
        var fetches = 0
        var failures = 0
        /// Why the last fetch failed, if it did.
        var lastError: String?
        /// The one scheduled refresh: every fetch that ends moves it, so fetches caused by unknown `kid`s never add
        /// refreshes of their own.
        var refresh: Scheduled<Void>?
    }

    private let states: Mutex<[String: State]>
    /// The keys fetched so far, as the verifier reads them.
    public let ring: RemoteKeyRing
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let clock: @Sendable () -> Double
    private let stopped = Atomic<Bool>(false)

    /// A fetcher for `tenants`' settings, filling `ring`, working on `eventLoop`.
    public init(
        tenants: [String: RemoteKeySettings], ring: RemoteKeyRing, eventLoop: any EventLoop, logger: Logger,
        clock: (@Sendable () -> Double)? = nil
    ) {
        states = Mutex(tenants.mapValues { State(settings: $0) })
        self.ring = ring
        self.eventLoop = eventLoop
        self.logger = logger
        let origin = NIODeadline.now()
        self.clock = clock ?? { Double((NIODeadline.now() - origin).nanoseconds) / 1e9 }
    }

    /// The tenants whose keys are fetched.
    public var tenants: [String] { states.withLock { Array($0.keys) } }

    /// How many fetches of `tenant`'s keys were attempted, and how many failed.
    public func counts(for tenant: String) -> (fetches: Int, failures: Int) {
        states.withLock { ($0[tenant]?.fetches ?? 0, $0[tenant]?.failures ?? 0) }
    }

    /// Fetches every tenant's keys now; each tenant's future says whether its fetch succeeded. Later refreshes are
    /// scheduled by themselves.
    @discardableResult
    public func start() -> EventLoopFuture<[Bool]> {
        let fetches = tenants.sorted().map { fetch($0, reason: "start") }
        return EventLoopFuture.whenAllComplete(fetches, on: eventLoop).map { results in
            results.map { (try? $0.get()) ?? false }
        }
    }

    /// Stops scheduling refreshes.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        for refresh in states.withLock({ $0.values.compactMap(\.refresh) }) { refresh.cancel() }
    }

    /// A token of `tenant` named a `kid` the ring does not have: fetch again, unless the last fetch is younger than
    /// the tenant's minimum refetch interval (then join the fetch in progress, or answer false at once).
    public func refetchForUnknownKey(tenant: String) -> EventLoopFuture<Bool> {
        fetch(tenant, reason: "unknown kid", rateLimited: true)
    }

    // MARK: - Fetching

    /// Starts a fetch of `tenant`'s keys, or joins the one in progress; `rateLimited` fetches answer false at once
    /// when the last fetch started less than the minimum refetch interval ago.
    private func fetch(_ tenant: String, reason: String, rateLimited: Bool = false) -> EventLoopFuture<Bool> {
        let promise = eventLoop.makePromise(of: Bool.self)
        let now = clock()
        let started: Result<(RemoteKeySettings, String?), Joined> = states.withLock { states in
            guard var state = states[tenant] else { return .failure(.none) }
            if let inFlight = state.inFlight { return .failure(.joined(inFlight)) }
            if rateLimited && now - state.lastStart < Double(state.settings.minimumRefetchSeconds) { return .failure(.none) }
            state.inFlight = promise.futureResult
            state.lastStart = now
            state.fetches += 1
            states[tenant] = state
            return .success((state.settings, state.jwksURL))
        }
        let settings: RemoteKeySettings
        let knownURL: String?
        switch started {
        case .success(let values): (settings, knownURL) = values
        case .failure(.joined(let inFlight)):
            promise.succeed(false)
            return inFlight
        case .failure(.none):
            promise.succeed(false)
            return promise.futureResult
        }
        jwksURL(settings, known: knownURL).flatMap { url in
            self.get(url, settings).map { (url, $0) }
        }.whenComplete { result in
            var lifetime = Double(settings.defaultLifetimeSeconds)
            var succeeded = false
            switch result {
            case .success(let (url, response)):
                do {
                    let keys = try JWTVerificationKey.jwks(response.body, skippingUnusable: true)
                    self.ring.replace(keys, for: tenant)
                    lifetime = Self.lifetime(response.headers, settings)
                    succeeded = true
                    self.states.withLock {
                        $0[tenant]?.jwksURL = url; $0[tenant]?.lastError = nil
                    }
                    self.logger.info(
                        "signing keys fetched", metadata: ["tenant": "\(tenant)", "keys": "\(keys.count)", "reason": "\(reason)"])
                } catch {
                    self.failed(tenant, "\(url): \(error)")
                }
            case .failure(let error):
                self.failed(tenant, "\(error)")
            }
            self.states.withLock { $0[tenant]?.inFlight = nil }
            // The next refresh: before the set runs out, or (after a failure) after the refetch interval.
            let next =
                succeeded ? max(Double(settings.minimumRefetchSeconds), lifetime * 0.9) : Double(max(settings.minimumRefetchSeconds, 5))
            self.schedule(tenant, in: next)
            promise.succeed(succeeded)
        }
        return promise.futureResult
    }

    /// Why no new fetch started.
    private enum Joined: Error {
        case joined(EventLoopFuture<Bool>)
        case none
    }

    private func failed(_ tenant: String, _ why: String) {
        states.withLock {
            $0[tenant]?.failures += 1
            $0[tenant]?.lastError = why
        }
        logger.warning("signing key fetch failed; the last good keys stay in force", metadata: ["tenant": "\(tenant)", "error": "\(why)"])
    }

    /// Moves `tenant`'s one refresh to `seconds` from now.
    private func schedule(_ tenant: String, in seconds: Double) {
        guard !stopped.load(ordering: .relaxed) else { return }
        let task = eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) { [self] in
            guard !stopped.load(ordering: .relaxed) else { return }
            _ = fetch(tenant, reason: "refresh")
        }
        let replaced = states.withLock { states -> Scheduled<Void>? in
            let previous = states[tenant]?.refresh
            states[tenant]?.refresh = task
            return previous
        }
        replaced?.cancel()
    }

    /// The JWKS URL: configured, remembered, or read from the issuer's metadata (OpenID Connect discovery first,
    /// then RFC 8414), whose `issuer` must be the configured one.
    private func jwksURL(_ settings: RemoteKeySettings, known: String?) -> EventLoopFuture<String> {
        switch settings.source {
        case .jwks(let url): return eventLoop.makeSucceededFuture(url)
        case .discovery(let issuer):
            if let known { return eventLoop.makeSucceededFuture(known) }
            let trimmed = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
            let openID = trimmed + "/.well-known/openid-configuration"
            return get(openID, settings).flatMapError { _ in
                self.get(Self.rfc8414URL(issuer: trimmed), settings)
            }.flatMapThrowing { response in
                try Self.jwksURI(in: response.body, issuer: issuer)
            }
        }
    }

    /// Why fetching keys as `settings` say can never succeed (the URL is not `https://`, its CA bundle does not load),
    /// or nil: checked before the gateway starts (found by review: a missing `ca_file` passed `config check`, and the
    /// started gateway failed every fetch, so the tenant's tokens never verified).
    public static func problem(with settings: RemoteKeySettings) -> String? {
        let url: String
        switch settings.source {
        case .jwks(let jwks): url = jwks
        case .discovery(let issuer): url = issuer
        }
        do {
            _ = try HTTPSFetch(url: url, caFile: settings.caFile, maximumBytes: settings.maximumBytes)
            return nil
        } catch {
            return "\(error)"
        }
    }

    private func get(_ url: String, _ settings: RemoteKeySettings) -> EventLoopFuture<HTTPSFetch.Response> {
        do {
            return try HTTPSFetch(url: url, caFile: settings.caFile, maximumBytes: settings.maximumBytes).send(on: eventLoop)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
    static func rfc8414URL(issuer: String) -> String {
        let rest = issuer.dropFirst("https://".count)
        guard let slash = rest.firstIndex(of: "/") else { return issuer + "/.well-known/oauth-authorization-server" }
        return "https://" + rest[..<slash] + "/.well-known/oauth-authorization-server" + rest[slash...]
    }

    /// The `jwks_uri` of an authorization server metadata document, checked: the document's `issuer` is the one
    /// configured, and the URI is https.
    static func jwksURI(in document: [UInt8], issuer: String) throws -> String {
        struct Unusable: Error, CustomStringConvertible { let description: String }
        guard let metadata = (try? JSONParser.parse(document))?.objectValue else {
            throw Unusable(description: "metadata is not a JSON object")
        }
        guard metadata["issuer"]?.stringValue == issuer else {
            throw Unusable(description: "metadata names another issuer than the configured \(issuer)")
        }
        guard let uri = metadata["jwks_uri"]?.stringValue, uri.hasPrefix("https://") else {
            throw Unusable(description: "metadata has no https jwks_uri")
        }
        return uri
    }

    /// How long a fetched set is used: `Cache-Control: max-age` (`no-cache`/`no-store`: the minimum), within the
    /// minimum refetch interval and a day; otherwise the configured default.
    static func lifetime(_ headers: HTTPHeaders, _ settings: RemoteKeySettings) -> Double {
        let minimum = Double(settings.minimumRefetchSeconds)
        let directives = HeaderText.directives(headers, "cache-control")
        if directives.contains(where: { $0.name == "no-store" || $0.name == "no-cache" }) { return minimum }
        for directive in directives where directive.name == "max-age" {
            if let seconds = directive.value.flatMap({ Double($0) }), seconds >= 0 { return min(max(seconds, minimum), 86_400) }
        }
        return Double(settings.defaultLifetimeSeconds)
    }
}

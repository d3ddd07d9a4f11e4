public import Identity
public import Logging
public import NIOCore
import NIOHTTP1
import StrictJSON
import Synchronization

import struct Foundation.Date
import func Glibc.time

/// Opaque (non-JWT) bearer tokens, checked with the tenant's authorization server by RFC 7662 introspection, over
/// the gateway's own HTTPS client, with a bounded cache of the answers.
///
/// - Each tenant's lookups reuse kept-alive connections to its endpoint (its own, at most `maximumInFlight`; idle
///   ones are closed after 3 s), so a lookup costs one request rather than a TCP and TLS handshake.
/// - An answer is remembered for the tenant's `cache_seconds`, never past the token's `exp`; inactive answers too
///   (so a flood of made-up tokens costs the authorization server one request each, at most `maximumInFlight` at a
///   time per tenant and `maximumInFlightPerSource` per client source — beyond that the caller gets `503`, not a
///   queue; one source cannot take every slot of a tenant whose authorization server is slow).
/// - An active answer must name a valid agent (`sub`, or the configured claim), and, when it has an `aud`, include
///   the tenant's audience or resource URI. Its `scope` becomes the principal's scopes.
/// - Each tenant has a cache of its own, of its own `cache_size`: one tenant's flood of made-up tokens never evicts
///   another tenant's answers (and so never sends that tenant's agents back to its authorization server).
/// - Introspection that fails (unreachable, not JSON, not 2xx) refuses the request with `503`: fail closed. The
///   failure is logged at most once a second per tenant, with how many were held back.
public final class TokenIntrospector: Sendable {
    /// One tenant's introspection: settings, its HTTPS endpoint, and what the token's `aud` may name.
    struct Tenant: Sendable {
        let settings: IntrospectionSettings
        let fetch: HTTPSFetch
        let audiences: [String]
    }

    /// What introspection says about a token.
    public enum Outcome: Sendable {
        /// Active: the principal it names.
        case principal(Principal)
        /// Not active, or unusable: the reason (for the audit record).
        case refused(AuthenticationError)
        /// The authorization server could not be asked.
        case unavailable(String)
    }

    private struct Entry {
        let outcome: Outcome
        let until: Double
    }

    private let tenants: [String: Tenant]
    /// Answers per tenant, keyed by the token's SHA-256.
    private let cache = Mutex<[String: [String: Entry]]>([:])
    private let failureLog = LogThrottle(interval: 1)
    /// Introspections in flight, per tenant and per client source.
    private let inFlight = Mutex<(perTenant: [String: Int], perSource: [String: Int])>(([:], [:]))
    private let eventLoop: any EventLoop
    /// Longer tokens are refused without asking anyone (`identity.max_token_bytes`, as for JWTs).
    private let maximumTokenBytes: Int
    private let logger: Logger
    private let clock: @Sendable () -> Double
    /// Introspection requests one tenant may have open at once.
    static let maximumInFlight = 32
    /// Introspection requests one client source (`ClientSource`) may have open at once, over all tenants.
    static let maximumInFlightPerSource = 8
    /// How far ahead of the gateway's clock an answer's `nbf` may be (clocks differ a little).
    static let notBeforeLeewaySeconds: Int64 = 60

    /// An introspector for these tenants' settings; `audiences` are what a token's `aud` may name, per tenant. An
    /// endpoint that has not answered within `timeout` (connecting included) is unavailable.
    public init(
        settings: [String: IntrospectionSettings], audiences: [String: [String]], eventLoop: any EventLoop, logger: Logger,
        clock: (@Sendable () -> Double)? = nil, timeout: TimeAmount = .seconds(5), maximumTokenBytes: Int = 8192
    ) throws(UpstreamConfigurationError) {
        self.maximumTokenBytes = maximumTokenBytes
        var tenants: [String: Tenant] = [:]
        for (tenant, settings) in settings {
            tenants[tenant] = Tenant(
                settings: settings,
                // Kept-alive connections of the tenant's own (they carry its client credentials), at most as many as
                // it may have introspections in flight.
                fetch: try HTTPSFetch(
                    url: settings.url, caFile: settings.caFile, maximumBytes: 64 * 1024, timeout: timeout,
                    reusingConnectionsOn: eventLoop, poolKey: tenant, maximumConnections: Self.maximumInFlight, logger: logger),
                audiences: audiences[tenant] ?? [])
        }
        self.tenants = tenants
        self.eventLoop = eventLoop
        self.logger = logger
        let origin = NIODeadline.now()
        self.clock = clock ?? { Double((NIODeadline.now() - origin).nanoseconds) / 1e9 }
    }

    /// Whether `token` is opaque: not the three dot-separated parts of a JWS (those are verified as JWTs).
    public static func isOpaque(_ token: String) -> Bool { token.utf8.lazy.filter { $0 == UInt8(ascii: ".") }.count != 2 }

    /// The tenant whose introspection covers a request: the tenant its path names, or the only tenant that
    /// introspects.
    public func tenant(forPathTenant pathTenant: String?) -> String? {
        if let pathTenant { return tenants[pathTenant] == nil ? nil : pathTenant }
        return tenants.count == 1 ? tenants.keys.first : nil
    }

    /// What `tenant`'s authorization server says about `token` (from the cache when it answered recently), asked for a
    /// client from `source`.
    public func introspect(_ token: String, tenant: String, source: String) -> EventLoopFuture<Outcome> {
        guard let configuration = tenants[tenant] else {
            return eventLoop.makeSucceededFuture(.refused(.inactiveToken("no introspection for tenant \(tenant)")))
        }
        // Found by review: an opaque token of any size was sent on to the authorization server (60 KB per made-up one).
        guard token.utf8.count <= maximumTokenBytes else {
            return eventLoop.makeSucceededFuture(.refused(.tokenTooLarge(bytes: token.utf8.count, limit: maximumTokenBytes)))
        }
        // Per tenant: one tenant's authorization server never answers for another's.
        let key = SHA256Digest.hex(Array(token.utf8))
        let now = clock()
        if let entry = cache.withLock({ $0[tenant]?[key] }), entry.until > now { return eventLoop.makeSucceededFuture(entry.outcome) }
        let refusal = inFlight.withLock { counts -> String? in
            guard counts.perTenant[tenant, default: 0] < Self.maximumInFlight else {
                return "too many introspections in flight for the tenant"
            }
            guard counts.perSource[source, default: 0] < Self.maximumInFlightPerSource else {
                return "too many introspections in flight for this client's source address"
            }
            counts.perTenant[tenant, default: 0] += 1
            counts.perSource[source, default: 0] += 1
            return nil
        }
        if let refusal { return eventLoop.makeSucceededFuture(.unavailable(refusal)) }
        let settings = configuration.settings
        let credentials = Array("\(Self.formEncode(settings.clientID)):\(Self.formEncode(settings.clientSecret))".utf8)
        let body = Array("token=\(Self.formEncode(token))&token_type_hint=access_token".utf8)
        return configuration.fetch.send(
            .POST,
            headers: [
                ("Content-Type", "application/x-www-form-urlencoded"), ("Authorization", "Basic " + Base64URL.encodeStandard(credentials)),
            ], body: body, on: eventLoop
        ).map { response -> Outcome in
            let outcome = Self.outcome(response.body, tenant: tenant, configuration: configuration, now: Int64(time(nil)))
            if case .unavailable = outcome { return outcome }
            var until = now + Double(settings.cacheSeconds)
            if case .principal(let principal) = outcome, let expiry = principal.expiresAt?.timeIntervalSince1970 {
                until = min(until, now + max(0, expiry - Double(time(nil))))
            }
            self.remember(key, Entry(outcome: outcome, until: until), tenant: tenant, capacity: settings.cacheSize, now: now)
            return outcome
        }.recover { error in
            // Once a second per tenant at most: while the authorization server is down, every request fails here.
            if let suppressed = self.failureLog.admit(tenant) {
                self.logger.warning(
                    "token introspection failed",
                    metadata: ["tenant": "\(tenant)", "error": "\(error)", "suppressed_since_last": "\(suppressed)"])
            }
            return .unavailable("introspection endpoint: \(error)")
        }.always { _ in
            self.inFlight.withLock { counts in
                counts.perTenant[tenant] = counts.perTenant[tenant, default: 1] > 1 ? counts.perTenant[tenant]! - 1 : nil
                counts.perSource[source] = counts.perSource[source, default: 1] > 1 ? counts.perSource[source]! - 1 : nil
            }
        }
    }

    private func remember(_ key: String, _ entry: Entry, tenant: String, capacity: Int, now: Double) {
        cache.withLock { caches in
            var cache = caches.removeValue(forKey: tenant) ?? [:]
            defer { caches[tenant] = cache }
            if cache.count >= capacity {
                // Expired answers go, and then an eighth of the rest at once, so that a full cache is not copied again on
                // every answer that follows (found by review: a cache full of live answers was copied per insert).
                cache = cache.filter { $0.value.until > now }
                let room = max(1, capacity / 8)
                if cache.count > capacity - room {
                    // Refused answers first (found by review: anyone can send made-up tokens to a tenant's endpoint,
                    // and their answers evicted the tenant's agents' active ones), then any.
                    var excess = cache.count - (capacity - room)
                    let refused = cache.lazy.filter { if case .principal = $0.value.outcome { false } else { true } }.map(\.key)
                    for victim in Array(refused.prefix(excess)) { cache[victim] = nil }
                    excess = cache.count - (capacity - room)
                    if excess > 0 { for victim in Array(cache.keys.prefix(excess)) { cache[victim] = nil } }
                }
            }
            cache[key] = entry
        }
    }

    /// Reads an RFC 7662 answer.
    static func outcome(_ body: [UInt8], tenant: String, configuration: Tenant, now: Int64) -> Outcome {
        guard let answer = (try? JSONParser.parse(body))?.objectValue, let active = answer["active"]?.boolValue else {
            return .unavailable("introspection answer is not a JSON object with a boolean 'active'")
        }
        guard active else { return .refused(.inactiveToken("the authorization server says the token is not active")) }
        // A NumericDate may be written with a fraction or an exponent; one that is not a number at all is refused.
        var expiry: Double?
        if let value = answer["exp"] {
            // Within ±1e15 s, as a JWT's: a date past what an `Int64` of milliseconds holds (1e300 was taken) trapped
            // when a stream's credentials ran out and their record was written, a year later (found by review).
            guard let seconds = value.numberValue?.doubleValue, seconds.isFinite, abs(seconds) < 1e15 else {
                return .refused(.inactiveToken("the introspection answer's exp is not a NumericDate"))
            }
            expiry = seconds
        }
        if let expiry, expiry <= Double(now) {
            // Written as a whole number where one holds it: an answer may say -1e300.
            let when = abs(expiry) < 1e15 ? String(Int64(expiry)) : String(expiry)
            return .refused(.inactiveToken("the introspection answer says the token expired at \(when)"))
        }
        // A token not valid yet (RFC 7662 `nbf`): the server's `active` should have said so; the gateway checks too.
        if let value = answer["nbf"], value != .null {
            guard let seconds = value.numberValue?.doubleValue, seconds.isFinite else {
                return .refused(.inactiveToken("the introspection answer's nbf is not a number"))
            }
            if seconds > Double(now) + Double(Self.notBeforeLeewaySeconds) {
                return .refused(.inactiveToken("the introspection answer says the token is not valid yet"))
            }
        }
        if let audience = answer["aud"] {
            let named = audience.stringValue.map { [$0] } ?? audience.arrayValue?.compactMap(\.stringValue) ?? []
            guard named.contains(where: configuration.audiences.contains) else {
                return .refused(.wrongAudience(expected: configuration.audiences.first ?? ""))
            }
        }
        // Whose token it is: an answer that names another tenant is refused, and so is one that names none where the
        // endpoint answers for more than this tenant; its issuer, when it says, must be one of this tenant's servers.
        let settings = configuration.settings
        if let claimed = answer[settings.tenantClaim] {
            guard claimed.stringValue == tenant else {
                return .refused(.tenantMismatch("the introspection answer's \(settings.tenantClaim) is not \(tenant)"))
            }
        } else if settings.requiresTenantClaim {
            return .refused(
                .missingClaim("\(settings.tenantClaim) in the introspection answer (its endpoint answers for more than one tenant)"))
        }
        if let issuer = answer["iss"], !settings.issuers.isEmpty {
            let named = issuer.stringValue ?? ""
            let trimmed = { (text: String) in text.hasSuffix("/") ? String(text.dropLast()) : text }
            guard settings.issuers.contains(where: { trimmed($0) == trimmed(named) }) else {
                return .refused(.wrongIssuer(String(named.prefix(200))))
            }
        }
        guard let agent = answer[configuration.settings.agentClaim]?.stringValue, IdentifierRules.isValid(agent) else {
            return .refused(.missingClaim("\(configuration.settings.agentClaim) (a valid agent id) in the introspection answer"))
        }
        // One scope at a time, so the set's room follows the distinct scopes (a set made from all the parts had room
        // for every repeat), and at most `Principal.maximumScopes` of them.
        var scopes = Set<String>()
        for scope in (answer["scope"]?.stringValue ?? "").split(separator: " ") {
            scopes.insert(String(scope))
            guard scopes.count <= Principal.maximumScopes else {
                return .refused(.invalidClaim("scope", reason: "names more than \(Principal.maximumScopes) scopes"))
            }
        }
        return .principal(
            Principal(
                tenant: tenant, agent: agent, method: .introspection, scopes: scopes,
                expiresAt: expiry.map { Date(timeIntervalSince1970: $0) }, certificate: nil, token: nil))
    }

    /// `application/x-www-form-urlencoded` (RFC 6749 appendix B): unreserved characters as they are, the rest %XX.
    static func formEncode(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.append(Character(Unicode.Scalar(byte)))
            default:
                encoded += "%" + String(byte, radix: 16, uppercase: true).leftPadded
            }
        }
        return encoded
    }

}

extension String {
    fileprivate var leftPadded: String { count == 1 ? "0" + self : self }
}

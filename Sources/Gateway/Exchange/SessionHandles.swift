import Glibc
public import Identity
import StrictJSON
public import TLS

/// Session handles and SSE event ids as the client sees them: sealed (`SealedBox`, AES-256-GCM) so that they bind the
/// upstream's session id or event id to the principal that received them, and carry an expiry. There is no table of
/// sessions: any gateway process with the same keys opens a handle another one issued, so replicas serve one client
/// session alternately, and nothing grows with the number of sessions.
///
/// Task handles work the same way: the task ids an upstream hands out are sealed to the principal that received
/// them, so that another caller cannot poll, cancel or answer a task it did not create, whatever the upstream's ids
/// look like.
///
/// Forms: `mcpgw1.<key id>.<base64url>` for a session, `mcpgw1e.<key id>.<base64url>` for an event id,
/// `mcpgw1k.<key id>.<base64url>` for a task, `mcpgw1l.<key id>.<base64url>` for a list request's id upstream.
public struct SessionHandles: Sendable {
    /// Why a handle presented by a caller is refused.
    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// Not a handle this gateway issued, altered, or sealed with a key it no longer has.
        case unreadable
        /// Issued to another tenant or agent.
        case foreign
        /// Past its expiry.
        case expired
        /// An event id from another session.
        case otherSession

        public var description: String {
            switch self {
            case .unreadable: "not a handle this gateway issued (or sealed with a retired key)"
            case .foreign: "issued to another principal"
            case .expired: "expired"
            case .otherSession: "issued for another session"
            }
        }
    }

    let box: SealedBox
    /// How long a session handle stays valid after it was issued.
    public let lifetime: Duration
    private let clock: @Sendable () -> Int64

    /// Handles sealed with `box`, valid for `lifetime`; `clock` gives Unix seconds (injectable for tests).
    public init(box: SealedBox, lifetime: Duration = .seconds(24 * 3600), clock: (@Sendable () -> Int64)? = nil) {
        self.box = box
        self.lifetime = lifetime
        self.clock = clock ?? { Int64(time(nil)) }
    }

    /// Handles under a fresh random key: good for one process only.
    public static func singleProcess() -> SessionHandles {
        SessionHandles(box: SealedBox(keys: [.random(id: "local")]))
    }

    static let sessionContext = Array("mcpgw session handle".utf8)
    static let eventContext = Array("mcpgw event id".utf8)
    static let taskContext = Array("mcpgw task handle".utf8)
    /// What every task handle starts with.
    public static let taskHandlePrefix = "mcpgw1k."

    /// The handle for `upstreamSession`, issued to `principal`.
    public func seal(session upstreamSession: String, for principal: Principal) -> String {
        sealExpiring(upstreamSession, for: principal, prefix: "mcpgw1", context: Self.sessionContext)
    }

    /// The upstream's session id inside `handle`, when `principal` may use it now.
    public func open(session handle: String, for principal: Principal) -> Result<String, Problem> {
        openExpiring(handle, for: principal, prefix: "mcpgw1", context: Self.sessionContext)
    }

    static let messagesContext = Array("mcpgw legacy messages endpoint".utf8)

    /// The `session` parameter of the gateway's legacy `/messages` endpoint: the upstream's message endpoint, issued
    /// to `principal`. Its own kind of handle (neither a session handle nor usable as one).
    public func seal(messagesEndpoint upstreamPath: String, for principal: Principal) -> String {
        sealExpiring(upstreamPath, for: principal, prefix: "mcpgw1m", context: Self.messagesContext)
    }

    /// The upstream's message endpoint inside `handle`, when `principal` may use it now.
    public func open(messagesEndpoint handle: String, for principal: Principal) -> Result<String, Problem> {
        openExpiring(handle, for: principal, prefix: "mcpgw1m", context: Self.messagesContext)
    }

    private func sealExpiring(_ value: String, for principal: Principal, prefix: String, context: [UInt8]) -> String {
        let payload = JSONValue.object(
            JSONObject([
                .init(key: "t", value: .string(principal.tenant)), .init(key: "a", value: .string(principal.agent)),
                .init(key: "s", value: .string(value)),
                .init(key: "e", value: .number(JSONNumber(clock() + lifetime.components.seconds))),
            ]))
        let (keyID, sealed) = box.seal(payload.serializedBytes, context: context)
        return "\(prefix).\(keyID).\(Base64URL.encode(sealed))"
    }

    private func openExpiring(_ handle: String, for principal: Principal, prefix: String, context: [UInt8]) -> Result<String, Problem> {
        guard let payload = unseal(handle, prefix: prefix, context: context) else { return .failure(.unreadable) }
        guard payload["t"]?.stringValue == principal.tenant, payload["a"]?.stringValue == principal.agent else {
            return .failure(.foreign)
        }
        guard let expiry = payload["e"]?.numberValue?.int64Value, expiry > clock() else { return .failure(.expired) }
        guard let value = payload["s"]?.stringValue else { return .failure(.unreadable) }
        return .success(value)
    }

    /// The event id the client sees for the upstream's `eventID` on a stream of `upstreamSession` (nil when there
    /// is no session), received by `principal`.
    public func seal(event eventID: String, session upstreamSession: String?, for principal: Principal) -> String {
        let payload = JSONValue.object(
            JSONObject([
                .init(key: "t", value: .string(principal.tenant)), .init(key: "a", value: .string(principal.agent)),
                .init(key: "s", value: upstreamSession.map(JSONValue.string) ?? .null), .init(key: "i", value: .string(eventID)),
                .init(key: "e", value: .number(JSONNumber(clock() + lifetime.components.seconds))),
            ]))
        let (keyID, sealed) = box.seal(payload.serializedBytes, context: Self.eventContext)
        return "mcpgw1e.\(keyID).\(Base64URL.encode(sealed))"
    }

    /// The upstream's event id inside `sealed`, when it was issued to `principal` on `upstreamSession`.
    public func open(event sealed: String, session upstreamSession: String?, for principal: Principal) -> Result<String, Problem> {
        guard let payload = unseal(sealed, prefix: "mcpgw1e", context: Self.eventContext) else { return .failure(.unreadable) }
        guard payload["t"]?.stringValue == principal.tenant, payload["a"]?.stringValue == principal.agent else {
            return .failure(.foreign)
        }
        guard payload["s"]?.stringValue == upstreamSession else { return .failure(.otherSession) }
        // As long as a session handle: a stream position without a session would otherwise stay good for ever.
        guard let expiry = payload["e"]?.numberValue?.int64Value, expiry > clock() else { return .failure(.expired) }
        guard let event = payload["i"]?.stringValue else { return .failure(.unreadable) }
        return .success(event)
    }

    /// The handle the client sees for the upstream's task `taskID`, received by `principal`, valid as long as a
    /// session handle (`lifetime`): an upstream that restarts and numbers its tasks from the start again would
    /// otherwise let an old handle name another caller's new task for ever.
    public func seal(task taskID: String, for principal: Principal) -> String {
        let payload = JSONValue.object(
            JSONObject([
                .init(key: "t", value: .string(principal.tenant)), .init(key: "a", value: .string(principal.agent)),
                .init(key: "k", value: .string(taskID)),
                .init(key: "e", value: .number(JSONNumber(clock() + lifetime.components.seconds))),
            ]))
        let (keyID, sealed) = box.seal(payload.serializedBytes, context: Self.taskContext)
        return "mcpgw1k.\(keyID).\(Base64URL.encode(sealed))"
    }

    /// The upstream's task id inside `handle`, when it was issued to `principal`.
    public func open(task handle: String, for principal: Principal) -> Result<String, Problem> {
        guard let payload = unseal(handle, prefix: "mcpgw1k", context: Self.taskContext) else { return .failure(.unreadable) }
        guard payload["t"]?.stringValue == principal.tenant, payload["a"]?.stringValue == principal.agent else {
            return .failure(.foreign)
        }
        guard let expiry = payload["e"]?.numberValue?.int64Value, expiry > clock() else { return .failure(.expired) }
        guard let task = payload["k"]?.stringValue else { return .failure(.unreadable) }
        return .success(task)
    }

    /// The id a list request of `principal` goes upstream under, in place of the client's `id`: the client's id
    /// sealed (so that any stream the answer comes back on, the request's own or the session's GET stream, can give the
    /// client its id back, and nobody else can use or guess it).
    func seal(listRequestID id: JSONValue, for principal: Principal) -> String {
        let payload = JSONValue.object(
            JSONObject([
                .init(key: "t", value: .string(principal.tenant)), .init(key: "a", value: .string(principal.agent)),
                .init(key: "i", value: .string(id.serialized)),
            ]))
        let (keyID, sealed) = box.seal(payload.serializedBytes, context: Self.listRequestContext)
        return "\(Self.listRequestPrefix)\(keyID).\(Base64URL.encode(sealed))"
    }

    /// The client's id inside a list request id the gateway sealed for `principal`; nil when it is not one.
    func open(listRequestID text: String, for principal: Principal) -> JSONValue? {
        // As long as the client's id made it (bounded by the body it came in), not the 4 KiB of other handles.
        guard let payload = unseal(text, prefix: "mcpgw1l", context: Self.listRequestContext, maximumBytes: .max),
            payload["t"]?.stringValue == principal.tenant, payload["a"]?.stringValue == principal.agent,
            let id = payload["i"]?.stringValue
        else { return nil }
        return try? JSONParser.parse(id)
    }

    static let listRequestContext = Array("mcpgw list request id".utf8)
    /// What every list request id of the gateway's starts with.
    public static let listRequestPrefix = "mcpgw1l."

    /// The longest handle or sealed event id the gateway opens (list request ids excepted): what it issues longer is
    /// of no use, so it issues nothing longer (an upstream session id or event id that would need more is refused or
    /// dropped).
    public static let maximumHandleBytes = 4096

    /// Whether `session` is a session id as MCP allows it (visible ASCII, 0x21–0x7E, at least one byte): one with
    /// anything else could not be sent back upstream as it came.
    public static func isUsable(session: String) -> Bool {
        !session.isEmpty && session.utf8.allSatisfy { (0x21...0x7E).contains($0) }
    }

    private func unseal(_ text: String, prefix: String, context: [UInt8], maximumBytes: Int = maximumHandleBytes) -> JSONObject? {
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == prefix, text.utf8.count <= maximumBytes, let sealed = Base64URL.decode(Array(parts[2].utf8)),
            let plaintext = box.open(sealed, keyID: String(parts[1]), context: context)
        else { return nil }
        return try? JSONParser.parse(plaintext).objectValue
    }
}

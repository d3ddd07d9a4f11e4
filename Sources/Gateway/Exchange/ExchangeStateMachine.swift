import NIOCore
import NIOHTTP1

/// The life of one HTTP request on a client connection, from its head to the last byte of its response, as a value
/// that takes events and returns what to do (the swift-nio state machine pattern). `MCPConnectionHandler`
/// performs the actions; this type never touches a channel, so every transition is tested without sockets.
///
/// ```
/// idle ─head→ authenticating ─ok→ receivingBody ─end→ deciding ─forward→ forwarding ─upstream head→ relaying ─end→ idle
///                   │                  │                  │                 │        └→ collecting (lists) → answering
///                   └──────────────────┴──── refusal ─────┴─────────────────┴──→ answering ─written→ idle | draining | closed
/// ```
struct ExchangeStateMachine {
    /// Where the exchange is.
    enum State: Equatable {
        /// Waiting for a request head.
        case idle
        /// The head arrived; credentials are being checked. Body bytes are held (bounded; reading pauses beyond).
        case authenticating
        /// Authenticated; the body is being collected (bounded).
        case receivingBody
        /// The body is complete; the gateway is deciding.
        case deciding
        /// Sent upstream; waiting for the response head.
        case forwarding
        /// The response head went to the client; the body is relayed (or, where the head allows none, dropped).
        case relaying(bodyAllowed: Bool)
        /// The upstream's answer is being collected for filtering.
        case collecting
        /// The gateway's own answer is being written.
        case answering
        /// Answered before the request's body was read: the rest is read and dropped, up to an allowance.
        case draining(allowance: Int)
        /// The connection is closing or closed.
        case closed
    }

    /// What the handler must do.
    enum Action: Equatable {
        /// Nothing.
        case none
        /// Check the caller's credentials, then report `authenticated()` or answer a refusal.
        case authenticate
        /// Stop reading from the client (too much unauthenticated body held).
        case pauseReading
        /// Read again.
        case resumeReading
        /// Tell the client to send its body (`100 Continue`: it asked with `Expect: 100-continue`), and read again.
        case continueAndResumeReading
        /// Refuse: the body is larger than allowed (the connection closes after the answer).
        case refuseBodyTooLarge
        /// Decide the complete request (`body` is empty for bodiless requests).
        case decide(ByteBuffer)
        /// Write and flush the response head at once.
        case writeResponseHead(HTTPResponseHead)
        /// Write and flush a piece of the response body.
        case writeResponseBody(ByteBuffer)
        /// End the response; close the connection afterwards when told.
        case writeResponseEnd(closeConnection: Bool)
        /// Filter the collected list answer, then answer with the result.
        case filterCollected(status: HTTPResponseHead, body: ByteBuffer)
        /// Refuse: the collected answer is larger than allowed (the upstream request is cancelled).
        case refuseCollectedTooLarge
        /// Answer the upstream's failure (502/504) before any of the response went out.
        case answerUpstreamFailure(UpstreamFailure)
        /// Close the client connection (the response cannot be completed).
        case closeConnection
        /// Cancel the upstream request (the client went away).
        case cancelUpstream
    }

    /// The state.
    private(set) var state = State.idle
    private var body = Self.noBody
    /// An empty body, shared: resetting `body` to it allocates nothing (a new or cleared buffer would).
    private static let noBody = ByteBuffer()
    private var requestEnded = false
    /// Whether the exchange's whole request (head, body, end) has been read.
    var requestComplete: Bool { requestEnded }
    private var keepAlive = true
    private var requestMethod = HTTPMethod.GET
    private var requestVersion = HTTPVersion.http1_1
    private var declaredBodyBytes: Int?
    /// The client asked to be told before it sends its body (`Expect: 100-continue`) and has not been told yet.
    private var awaitingContinue = false
    private var collectedHead: HTTPResponseHead?
    private let limits: Limits

    /// The bounds the state machine enforces.
    struct Limits {
        /// Largest request body.
        var maximumBodyBytes: Int
        /// Body bytes held while credentials are checked.
        var preAuthenticationBodyBytes: Int
        /// Largest answer collected for filtering.
        var maximumCollectedBytes: Int
        /// Body bytes read and dropped after an early answer before the connection is closed instead.
        var drainAllowance: Int = 64 * 1024
    }

    init(limits: Limits) { self.limits = limits }

    // MARK: - Client events

    /// A request head arrived; `headers`, when given, are the values of its headers already read.
    mutating func requestHead(_ head: HTTPRequestHead, headers: RequestHeaderValues? = nil) -> Action {
        guard case .idle = state else {
            state = .closed
            return .closeConnection
        }
        state = .authenticating
        body = Self.noBody
        requestEnded = false
        requestMethod = head.method
        requestVersion = head.version
        // RFC 9112 §6.3: without Transfer-Encoding, Content-Length (or its absence: zero) says how long the body is.
        let headers = headers ?? RequestHeaderValues(head.headers)
        keepAlive = headers.connection.keepsAlive(head.version)
        declaredBodyBytes =
            headers.contains(.transferEncoding) ? nil : headers.first(.contentLength).flatMap { Int($0) } ?? 0
        collectedHead = nil
        // RFC 9110 §10.1.1: only an HTTP/1.1 client with a body to send waits for `100 Continue`.
        awaitingContinue =
            declaredBodyBytes != 0 && headers.contains(.expect) && head.version != .http1_0
            && head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
        return .authenticate
    }

    /// The credentials were accepted.
    mutating func authenticated() -> Action {
        guard case .authenticating = state else { return .none }
        // A body declared larger than allowed is refused before it is read (and before a client that expects
        // `100 Continue` is told to send it), not once that much of it has arrived.
        if let declared = declaredBodyBytes, declared > limits.maximumBodyBytes { return .refuseBodyTooLarge }
        if requestEnded {
            state = .deciding
            return .decide(body)
        }
        state = .receivingBody
        if awaitingContinue {
            awaitingContinue = false
            return .continueAndResumeReading
        }
        return .resumeReading
    }

    /// Bytes of the request body collected so far (while it is received).
    var receivedBodyBytes: Int { body.readableBytes }

    /// A piece of the request body arrived.
    mutating func requestBody(_ part: ByteBuffer) -> Action {
        switch state {
        case .authenticating:
            guard body.readableBytes + part.readableBytes <= limits.maximumBodyBytes else { return .refuseBodyTooLarge }
            collect(part)
            return body.readableBytes > limits.preAuthenticationBodyBytes ? .pauseReading : .none
        case .receivingBody:
            guard body.readableBytes + part.readableBytes <= limits.maximumBodyBytes else { return .refuseBodyTooLarge }
            collect(part)
            return .none
        case .draining(let allowance):
            let left = allowance - part.readableBytes
            guard left >= 0 else {
                state = .closed
                return .closeConnection
            }
            state = .draining(allowance: left)
            return .none
        default:
            return .none
        }
    }

    /// Adds a piece to the body. The first piece is kept as it came (a body read whole, nearly every request, is then
    /// never copied); later ones are appended.
    private mutating func collect(_ part: ByteBuffer) {
        if body.readableBytes == 0 {
            body = part
        } else {
            var part = part
            body.writeBuffer(&part)
        }
    }

    /// The request is complete.
    mutating func requestEnd() -> Action {
        requestEnded = true
        switch state {
        case .receivingBody:
            state = .deciding
            let complete = body
            body = Self.noBody
            return .decide(complete)
        case .draining:
            state = .idle
            return .none
        default:
            return .none
        }
    }

    /// The client's connection closed.
    mutating func clientClosed() -> Action {
        let previous = state
        state = .closed
        switch previous {
        case .forwarding, .relaying, .collecting: return .cancelUpstream
        default: return .none
        }
    }

    // MARK: - Gateway events

    /// The request was sent upstream.
    mutating func forwarded() {
        if case .deciding = state { state = .forwarding }
    }

    /// The gateway answers the request itself (a refusal or a filtered list). False when the connection is gone.
    /// Whether an answer of the gateway's own can still be given (`answering` would succeed).
    var canAnswer: Bool {
        switch state {
        case .authenticating, .receivingBody, .deciding, .forwarding, .collecting: true
        default: false
        }
    }

    mutating func answering() -> Bool {
        switch state {
        case .authenticating, .receivingBody, .deciding, .forwarding, .collecting:
            state = .answering
            body = Self.noBody  // a collected answer refused (too large, held-bytes bound, upstream failure) is dropped now
            return true
        default:
            return false
        }
    }

    /// Whether the connection must close after the answer now being written: the client asked for it, or the
    /// request's body is still unread and too large to drain.
    var closesAfterAnswer: Bool {
        if !keepAlive { return true }
        if requestEnded { return false }
        // A client never told to continue may send its body or not: what follows cannot be framed.
        if awaitingContinue { return true }
        guard let declared = declaredBodyBytes else { return true }
        return declared > limits.drainAllowance
    }

    /// The gateway's answer has been written.
    mutating func answerWritten() -> Action {
        guard case .answering = state else { return .none }
        if closesAfterAnswer {
            state = .closed
            return .closeConnection
        }
        if requestEnded {
            state = .idle
        } else {
            state = .draining(allowance: limits.drainAllowance)
        }
        return .none
    }

    // MARK: - Upstream events

    /// The upstream's response head arrived. `collect`: the answer is to be filtered, not relayed; `collectErrors`:
    /// redirections and error answers (3xx, 4xx, 5xx) too (they carry ids to give back, `ListRequestIDs`).
    /// Whether an upstream answer is collected (to be filtered) rather than relayed: where answers are collected, any
    /// 2xx with a body (it may carry a list), and with `collectErrors` any error status but 304.
    static func collects(_ head: HTTPResponseHead, collect: Bool, collectErrors: Bool) -> Bool {
        let code = head.status.code
        return collect && (((200..<300).contains(code) && code != 204 && code != 205) || (collectErrors && code >= 300 && code != 304))
    }

    mutating func upstreamHead(_ head: HTTPResponseHead, collect: Bool, collectErrors: Bool = false) -> Action {
        guard case .forwarding = state else { return .none }
        if Self.collects(head, collect: collect, collectErrors: collectErrors) {
            state = .collecting
            collectedHead = head
            body = Self.noBody
            return .none
        }
        let framed = ResponseFraming.frame(
            head, requestMethod: requestMethod, clientVersion: requestVersion, keepAlive: keepAlive && requestEnded)
        if framed.closesConnection { keepAlive = false }
        state = .relaying(bodyAllowed: framed.bodyAllowed)
        return .writeResponseHead(framed.head)
    }

    /// A piece of the upstream's response body.
    mutating func upstreamBody(_ part: ByteBuffer) -> Action {
        switch state {
        case .relaying(let bodyAllowed):
            return bodyAllowed && part.readableBytes > 0 ? .writeResponseBody(part) : .none
        case .collecting:
            guard body.readableBytes + part.readableBytes <= limits.maximumCollectedBytes else { return .refuseCollectedTooLarge }
            var part = part
            body.writeBuffer(&part)
            return .none
        default:
            return .none
        }
    }

    /// The upstream's response is complete.
    mutating func upstreamEnd() -> Action {
        switch state {
        case .relaying:
            let close = !keepAlive || !requestEnded
            state = close ? .closed : .idle
            return .writeResponseEnd(closeConnection: close)
        case .collecting:
            let collected = body
            body = Self.noBody
            return .filterCollected(status: collectedHead!, body: collected)
        default:
            return .none
        }
    }

    /// The upstream request failed.
    mutating func upstreamFailed(_ failure: UpstreamFailure) -> Action {
        switch state {
        case .forwarding, .collecting:
            return .answerUpstreamFailure(failure)
        case .relaying:
            // Part of the response went out: the framing is lost, so the only honest end is closing.
            state = .closed
            return .closeConnection
        default:
            return .none
        }
    }
}

/// Response framing by RFC 9112 §6.3: which responses may carry a body, and the headers that say how long it is.
enum ResponseFraming {
    /// Response headers passed back to the client.
    static let forwardedResponseHeaders = HeaderNames([
        "content-type", "mcp-session-id", "cache-control", "mcp-protocol-version", "retry-after", "www-authenticate", "allow",
    ])
    /// Those of `forwardedResponseHeaders` that may appear once (bits by index): of each, only the first is passed on,
    /// the one the gateway read (a second `Content-Type` would have the client read as JSON an answer the gateway
    /// filtered as SSE, or the other way round).
    static let singletonResponseHeaders: UInt32 = ["content-type", "mcp-session-id", "mcp-protocol-version", "retry-after"]
        .reduce(0) { $0 | 1 << forwardedResponseHeaders.index(of: $1)! }

    /// An upstream's `Content-Length` as the client gets it: digits only, without the spaces around them that HTTP
    /// parsers let through, and without leading zeros; nil when it is not a plain decimal length (then the body is
    /// relayed chunked, framed by what the upstream connection read).
    static func length(_ value: String) -> String? {
        var value = value
        return value.withUTF8 { bytes -> String? in
            var start = 0
            var end = bytes.count
            while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
            while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
            guard end > start, end - start <= 18 else { return nil }
            var length = 0
            for byte in bytes[start..<end] {
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                length = length * 10 + Int(byte - 0x30)
            }
            return String(length)
        }
    }

    /// The head to send the client for an upstream head, and whether body bytes may follow it. Responses to HEAD, and
    /// 1xx, 204, 205 and 304 responses, never carry a body, whatever the upstream sends after them.
    static func frame(
        _ upstream: HTTPResponseHead, requestMethod: HTTPMethod, clientVersion: HTTPVersion, keepAlive: Bool
    ) -> (head: HTTPResponseHead, bodyAllowed: Bool, closesConnection: Bool) {
        // One pass over the upstream's headers (this runs for every response): the forwarded ones, by their lower-case
        // names, and the framing headers.
        var headers = HTTPHeaders()
        headers.reserveCapacity(4)
        var contentLength: String?
        var hasTransferEncoding = false
        var singletonsSeen: UInt32 = 0
        var namesConnectionOptions = false
        for (name, value) in upstream.headers {
            if let forwarded = forwardedResponseHeaders.index(of: name) {
                let bit: UInt32 = 1 << forwarded
                if singletonResponseHeaders & bit != 0 {
                    guard singletonsSeen & bit == 0 else { continue }
                    singletonsSeen |= bit
                }
                headers.add(name: forwardedResponseHeaders.names[forwarded], value: value)
            } else if HeaderText.isName(name, "content-length") {
                contentLength = contentLength ?? ResponseFraming.length(value)
            } else if HeaderText.isName(name, "transfer-encoding") {
                hasTransferEncoding = true
            } else if HeaderText.isName(name, "connection"), HeaderText.namesOptions(value) {
                namesConnectionOptions = true
            }
        }
        // RFC 9110 §7.6.1: headers the upstream names in `Connection` are for this hop only, and are not relayed (found
        // by review: `Connection: Mcp-Session-Id` still had the session relayed).
        // The forwarded headers named are found first, then removed in one pass (removing each option in turn walked
        // every header once per option: a 1 MiB head of `Allow` lines and options held the event loop for seconds,
        // found by review).
        if namesConnectionOptions {
            var hopOnly: UInt32 = 0
            for option in HeaderText.connectionOptions(upstream.headers) {
                if let forwarded = forwardedResponseHeaders.index(of: option) { hopOnly |= 1 << forwarded }
            }
            if hopOnly != 0 {
                headers = HTTPHeaders(
                    headers.filter { header in
                        forwardedResponseHeaders.index(of: header.name).map { hopOnly & (1 << $0) == 0 } ?? true
                    })
            }
        }
        let code = upstream.status.code
        let bodyAllowed = requestMethod != .HEAD && !(100..<200).contains(code) && code != 204 && code != 205 && code != 304
        var close = !keepAlive
        if bodyAllowed {
            if let length = contentLength, !hasTransferEncoding {
                headers.add(name: "Content-Length", value: length)
            } else if clientVersion.major > 1 || (clientVersion.major == 1 && clientVersion.minor >= 1) {
                headers.add(name: "Transfer-Encoding", value: "chunked")
            } else {
                // An HTTP/1.0 client learns where the body ends when the connection closes.
                close = true
            }
        } else if requestMethod == .HEAD, let length = contentLength {
            // The length of the representation a GET would have got; no body follows.
            headers.add(name: "Content-Length", value: length)
        } else if code == 205 {
            // A client frames a 205 like any other answer (RFC 9112 6.3 exempts only 1xx, 204 and 304): without a
            // length an HTTP/1.0 client would read until the close that a kept connection never brings.
            headers.add(name: "Content-Length", value: "0")
        }
        if close {
            headers.add(name: "Connection", value: "close")
        } else if clientVersion.major == 1 && clientVersion.minor == 0 {
            // An HTTP/1.0 client that asked to keep the connection expects to be told it is kept.
            headers.add(name: "Connection", value: "keep-alive")
        }
        return (HTTPResponseHead(version: clientVersion, status: upstream.status, headers: headers), bodyAllowed, close)
    }
}

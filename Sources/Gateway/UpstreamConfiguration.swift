/// Where a tenant's MCP traffic goes, and the credential the gateway presents there.
public struct UpstreamConfiguration: Sendable, Hashable {
    /// The upstream MCP endpoint, e.g. `http://127.0.0.1:9000/mcp` or `https://tools.internal/mcp`.
    public var url: String
    /// A header the gateway adds to every upstream request (e.g. `Authorization`), never the caller's own.
    public var credentialHeader: String?
    /// That header's value.
    public var credentialValue: String?
    /// CAs that may sign an `https` upstream's certificate (PEM). Default: the system bundle.
    public var caFile: String?
    /// The gateway's client certificate chain for `https` upstreams that ask for one (PEM).
    public var clientCertificateFile: String?
    /// The key of `clientCertificateFile` (PEM).
    public var clientKeyFile: String?
    /// How long a `tools/call` may take to answer: the wait for its response head (an upstream answering in JSON
    /// sends the head only with the result). Nil: the gateway's `upstream_timeout_seconds`, like every other request.
    public var callTimeout: Duration?
    /// The upstream's legacy HTTP+SSE endpoint (2024-11-05), e.g. `http://127.0.0.1:9000/sse`: what the gateway's
    /// `GET /sse` relays. Nil: the tenant has no legacy transport.
    public var legacySSEURL: String?
    /// The upstream scopes tasks to the MCP session (each session sees only its own), not to the credential the
    /// gateway presents there, which every agent of the tenant shares. Only then are task ids the upstream announces
    /// unasked (`tasks/list`, status notifications on a GET stream) the caller's own, and sealed to it. Default false.
    public var tasksScopedToSession = false
    /// How long the upstream keeps an idle connection open (its keep-alive timeout). A pooled connection is reused
    /// only while it has been idle for less than this minus a second, so that a request never goes out on a connection
    /// the upstream is closing; zero or one second: every request gets a connection of its own. Nil: at least 4 s is
    /// assumed (reused within 3 s, below the usual 5 s). A `Keep-Alive: timeout=N` the upstream sends shortens it.
    public var keepAlive: Duration?

    /// Headers the gateway writes itself or that frame the message (and every `Mcp-*` one): a credential header may
    /// not be one of them (a second `Content-Length`, or a `Transfer-Encoding` beside one, is how requests are
    /// smuggled).
    static let reservedCredentialHeaders: Set<String> = [
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer",
        "upgrade", "expect", "content-type", "content-encoding", "accept", "last-event-id", "traceparent", "tracestate",
    ]

    /// Why `name` cannot be a credential header (not an HTTP field name, or one the gateway writes itself), or nil.
    public static func credentialHeaderProblem(_ name: String) -> String? {
        // RFC 9110 token characters.
        let tokenSymbols = Set("!#$%&'*+-.^_`|~".utf8)
        guard !name.isEmpty,
            name.utf8.allSatisfy({ byte in
                (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || tokenSymbols.contains(byte)
            })
        else { return "'\(name)' is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)" }
        // Every `Mcp-*` header is the protocol's (`Mcp-Session-Id`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`…): the gateway
        // checks them against the body, and a credential must not replace one (found by review).
        guard !reservedCredentialHeaders.contains(name.lowercased()), !name.lowercased().hasPrefix("mcp-") else {
            return "'\(name)' is a header the gateway writes itself or that frames the request; choose another"
        }
        return nil
    }

    /// Why `value` cannot be sent as a header value (control characters such as a line break), or nil.
    public static func credentialValueProblem(_ value: String) -> String? {
        guard !value.isEmpty else { return "is empty" }
        guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            return "contains a line break or another control character, which no header value may hold"
        }
        return nil
    }

    /// The system's CA bundle (Debian's ca-certificates).
    public static let systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

    /// An upstream at `url`, optionally with a credential header and TLS settings.
    public init(
        url: String, credentialHeader: String? = nil, credentialValue: String? = nil, caFile: String? = nil,
        clientCertificateFile: String? = nil, clientKeyFile: String? = nil
    ) {
        self.url = url
        self.credentialHeader = credentialHeader
        self.credentialValue = credentialValue
        self.caFile = caFile
        self.clientCertificateFile = clientCertificateFile
        self.clientKeyFile = clientKeyFile
    }
}

/// Where a tenant's MCP traffic goes, and the credential the gateway presents there.
public struct UpstreamConfiguration: Sendable, Hashable {
    /// The upstream MCP endpoint, e.g. `http://127.0.0.1:9000/mcp`.
    public var url: String
    /// A header the gateway adds to every upstream request (e.g. `Authorization`), never the caller's own.
    public var credentialHeader: String?
    /// That header's value.
    public var credentialValue: String?

    /// An upstream at `url`, optionally with a credential header.
    public init(url: String, credentialHeader: String? = nil, credentialValue: String? = nil) {
        self.url = url
        self.credentialHeader = credentialHeader
        self.credentialValue = credentialValue
    }
}

/// Bounds on what one request may cost.
public struct GatewayLimits: Sendable, Hashable {
    /// Largest request body, in bytes (413 beyond).
    public var maximumBodyBytes: Int
    /// Deepest JSON nesting in a request body.
    public var maximumJSONDepth: Int
    /// How long the upstream may take to start its response (504 beyond). Streams are not cut once started.
    public var upstreamTimeout: Duration
    /// Largest `tools/list` response the gateway buffers to filter (larger ones are refused with 502).
    public var maximumFilteredResponseBytes: Int

    /// Limits with production defaults: 4 MiB bodies, depth 64, 30 s upstream head timeout, 16 MiB tool lists.
    public init(
        maximumBodyBytes: Int = 4 * 1024 * 1024, maximumJSONDepth: Int = 64, upstreamTimeout: Duration = .seconds(30),
        maximumFilteredResponseBytes: Int = 16 * 1024 * 1024
    ) {
        self.maximumBodyBytes = maximumBodyBytes
        self.maximumJSONDepth = maximumJSONDepth
        self.upstreamTimeout = upstreamTimeout
        self.maximumFilteredResponseBytes = maximumFilteredResponseBytes
    }
}

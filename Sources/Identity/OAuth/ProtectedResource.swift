public import StrictJSON

/// The gateway as an OAuth 2.0 protected resource (RFC 9728): one MCP endpoint, the authorization servers that
/// issue tokens for it, and where its metadata document is served. A client that gets a `401` follows
/// `resource_metadata` to the document, and the document to an authorization server.
public struct ProtectedResource: Sendable, Equatable {
    /// The canonical URI of the MCP endpoint: what a token's `aud` names (RFC 8707) and the document's `resource`.
    public let resource: String
    /// The path under which the metadata document is served (`/.well-known/oauth-protected-resource` + the
    /// resource's path, RFC 9728 §3.1).
    public let metadataPath: String
    /// The document's full URL, for `WWW-Authenticate: Bearer resource_metadata="…"`.
    public let metadataURL: String
    /// Issuers of tokens for this resource (`authorization_servers`).
    public let authorizationServers: [String]
    /// Scopes the resource's policies use (`scopes_supported`).
    public let scopesSupported: [String]

    /// The resource at `publicURL` + `path`, with its authorization servers and scopes.
    public init(publicURL: String, path: String, authorizationServers: [String], scopesSupported: [String]) {
        resource = publicURL + path
        metadataPath = Self.wellKnown + path
        metadataURL = publicURL + metadataPath
        self.authorizationServers = authorizationServers
        self.scopesSupported = scopesSupported
    }

    /// Where RFC 9728 metadata lives.
    public static let wellKnown = "/.well-known/oauth-protected-resource"

    /// The metadata document (RFC 9728 §2).
    public var document: JSONValue {
        .object(
            JSONObject([
                .init(key: "resource", value: .string(resource)),
                .init(key: "authorization_servers", value: .array(authorizationServers.map(JSONValue.string))),
                .init(key: "scopes_supported", value: .array(scopesSupported.map(JSONValue.string))),
                .init(key: "bearer_methods_supported", value: .array([.string("header")])),
            ]))
    }
}

/// Every protected resource the gateway publishes: the shared MCP endpoint (when one set of authorization servers
/// serves all tenants) and each tenant's own endpoint, `/tenants/<tenant>` + the MCP path, which lets a client's first,
/// unauthenticated request name its tenant.
public struct OAuthResources: Sendable {
    /// The gateway's public origin (`https://host[:port]`), from configuration: never from a request's `Host`, since
    /// audiences are checked against it.
    public let publicURL: String
    /// The MCP endpoint's own resource, when `identity.oauth` names authorization servers for all tenants.
    public let shared: ProtectedResource?
    /// Each tenant's resource, for tenants with an `oauth` section.
    public let tenants: [String: ProtectedResource]

    /// The prefix of tenant endpoints.
    public static let tenantPrefix = "/tenants/"

    /// Resources from their parts.
    public init(publicURL: String, shared: ProtectedResource?, tenants: [String: ProtectedResource]) {
        self.publicURL = publicURL
        self.shared = shared
        self.tenants = tenants
    }

    /// The resource whose metadata document is served at `path`, if any.
    public func metadata(at path: String) -> ProtectedResource? {
        if let shared, shared.metadataPath == path { return shared }
        return tenants.values.first { $0.metadataPath == path }
    }

    /// The resource a `401` on the MCP endpoint points to: the tenant's when the request named one, else the shared.
    public func challenged(tenant: String?) -> ProtectedResource? {
        tenant.flatMap { tenants[$0] } ?? shared
    }

    /// The tenant a request path names (`/tenants/<tenant>` + `mcpPath`), and nil for any other path.
    public static func tenant(inPath path: String, mcpPath: String) -> String? {
        guard path.hasPrefix(tenantPrefix), path.hasSuffix(mcpPath) else { return nil }
        let name = path.dropFirst(tenantPrefix.count).dropLast(mcpPath.count)
        guard !name.isEmpty, IdentifierRules.isValid(String(name)), !name.contains("/") else { return nil }
        return String(name)
    }
}

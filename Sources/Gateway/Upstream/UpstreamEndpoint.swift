import NIOCore
import NIOHTTP1
import TLS

/// A tenant's upstream, ready to connect to: parsed URL, TLS client context, credential header.
///
/// A class: it is read for every forwarded request, and handing it on then costs one reference, not a copy of each
/// of its strings. Nothing in it changes once built.
final class UpstreamEndpoint: Sendable {
    /// `scheme://host:port`: the key of per-upstream budgets (connections, idle connections).
    let key: String
    /// The key of pooled connections: the upstream's `key` and the tenant it serves. A connection carries one tenant's
    /// TLS client identity and was verified with that tenant's CAs; and an answer an upstream sends unasked (or late)
    /// would be read as the answer to the connection's next request. So a connection never carries another tenant's
    /// requests, even to the same upstream.
    let connectionKey: String
    /// Host name or address to connect to (no brackets).
    let host: String
    /// TCP port.
    let port: Int
    /// The request target sent upstream: path and query of the URL.
    let path: String
    /// The `Host` header: the upstream's own authority (servers that check Host accept it).
    let hostHeader: String
    /// The TLS client context for `https`, nil for `http`.
    let tls: TLSContext?
    /// Checked against the server's certificate (name or IP address); names are also sent as SNI.
    let serverName: String?
    /// The header the gateway adds (never the caller's credentials).
    let credential: (name: String, value: String)?
    /// The deadline for a `tools/call`'s response head, when the tenant sets one.
    let callTimeout: Duration?
    /// Whether the upstream scopes tasks to the MCP session (`UpstreamConfiguration.tasksScopedToSession`).
    let tasksScopedToSession: Bool
    /// Idle connections to this upstream in all pools; shared by every endpoint with the same `key`.
    let idleConnections: IdleConnectionCount
    /// How long an idle pooled connection may be reused (`UpstreamConfiguration.keepAlive` less a margin).
    let reuseWindow: TimeAmount

    /// Parses `configuration.url` and builds its TLS context, for `tenant`'s requests (its connections are pooled apart
    /// from every other tenant's). `idleCount` gives the count of idle connections for the upstream's `key` (shared
    /// by the endpoints of one upstream; by default, one of its own).
    init(
        _ configuration: UpstreamConfiguration, tenant: String,
        idleCount: (_ key: String) -> IdleConnectionCount = { _ in IdleConnectionCount() }
    ) throws(UpstreamConfigurationError) {
        callTimeout = configuration.callTimeout
        tasksScopedToSession = configuration.tasksScopedToSession
        reuseWindow = configuration.keepAlive.map(UpstreamConnection.reuseWindow(keepAlive:)) ?? UpstreamConnection.defaultReuseWindow
        let url = configuration.url
        let secure: Bool
        let rest: Substring
        if url.hasPrefix("https://") {
            secure = true
            rest = url.dropFirst(8)
        } else if url.hasPrefix("http://") {
            secure = false
            rest = url.dropFirst(7)
        } else {
            throw UpstreamConfigurationError(url: url, reason: "must start with http:// or https://")
        }
        // The path and authority go into every request line and Host header as they are: a blank, CR, LF or other
        // control byte there would split or end the request.
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "#") }) else {
            throw UpstreamConfigurationError(
                url: url, reason: "must be visible ASCII without blanks or a fragment (percent-encode the rest)")
        }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        guard !authority.isEmpty, !authority.contains("@") else {
            throw UpstreamConfigurationError(url: url, reason: "needs a host (and no user information)")
        }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw UpstreamConfigurationError(url: url, reason: "unclosed IPv6 bracket")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw UpstreamConfigurationError(url: url, reason: "unexpected text after the IPv6 address")
                }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        let port: Int
        if let portText {
            guard portText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), portText.utf8.count <= 5,
                let parsed = Int(portText), (1...65535).contains(parsed)
            else {
                // (Not the text itself: in `user:pass/word@host` it is part of the password.)
                throw UpstreamConfigurationError(url: url, reason: "the port is not a number 1-65535")
            }
            port = parsed
        } else {
            port = secure ? 443 : 80
        }
        guard !host.isEmpty else { throw UpstreamConfigurationError(url: url, reason: "needs a host") }
        self.host = String(host)
        self.port = port
        self.path = path
        self.hostHeader = String(authority)
        self.key = (secure ? "https://" : "http://") + authority
        self.connectionKey = key + " " + tenant
        self.idleConnections = idleCount(key)
        if let header = configuration.credentialHeader, let value = configuration.credentialValue {
            credential = (header, value)
        } else {
            credential = nil
        }
        if secure {
            serverName = String(host)
            var settings = TLSConfiguration(
                certificateChainFile: configuration.clientCertificateFile, privateKeyFile: configuration.clientKeyFile,
                trustedCABundles: [.init(label: "upstream", path: configuration.caFile ?? UpstreamConfiguration.systemCABundle)])
            settings.verifyServerCertificate = true
            do {
                tls = try TLSContext(role: .client, configuration: settings)
            } catch {
                throw UpstreamConfigurationError(url: url, reason: "TLS: \(error)")
            }
        } else {
            serverName = nil
            tls = nil
        }
    }
}

/// An upstream that cannot be used as configured.
public struct UpstreamConfigurationError: Error, Sendable, CustomStringConvertible {
    /// The upstream URL.
    public let url: String
    /// What is wrong.
    public let reason: String
    /// The error as logs and `config check` show it: a URL's user information (refused, but it may hold a password)
    /// is never echoed (found by review: `http://svc:S3cr3t@host/mcp` was printed whole).
    public var description: String { "upstream \(Self.redacted(url)): \(reason)" }

    /// `url` with any user information before its host replaced by `***`.
    /// Everything up to the last `@` is taken for user information, wherever it is: a password may hold `/`, `?` or
    /// `#` (found by review of the first version, which looked for `@` before the first `/` only).
    static func redacted(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        let start = url.range(of: "://").map(\.upperBound) ?? url.startIndex
        guard start <= at else { return url }
        return String(url[..<start]) + "***" + String(url[at...])
    }
}

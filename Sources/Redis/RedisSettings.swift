public import TLS

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the Redis server is and how to reach it.
public struct RedisSettings: Sendable {
    /// Host name or address (no brackets).
    public var host: String
    /// TCP port (default 6379).
    public var port: Int
    /// The database `SELECT`ed on every connection (default 0).
    public var database: Int
    /// The TLS client context for `rediss://` (the gateway's own OpenSSL client), nil for plain TCP.
    public var tls: TLSContext?
    /// Checked against the server's certificate; names are sent as SNI.
    public var serverName: String?
    /// The ACL user (`AUTH user password`); nil: `AUTH password` as the default user, when a password is set.
    public var username: String?
    /// The password, read from a file (never from the URL or the command line, where `ps` would show it).
    public var password: String?
    /// How long a connection (with TLS and `AUTH`) may take.
    public var connectTimeout: Duration
    /// How long a command may wait for its reply.
    public var commandTimeout: Duration
    /// Connections per event loop; commands are pipelined on them.
    public var poolSize: Int
    /// The first wait after a failed connection; it doubles per failure up to `maximumBackoff`.
    public var minimumBackoff: Duration
    /// The longest wait between connection attempts.
    public var maximumBackoff: Duration

    /// Settings for `url` (`redis://[user@]host[:port][/db]`, or `rediss://…` for TLS). A password in the URL is
    /// refused: it belongs in a file.
    public init(url: String) throws(RedisURLError) {
        let secure: Bool
        var rest: Substring
        if url.hasPrefix("rediss://") {
            (secure, rest) = (true, url.dropFirst(9))
        } else if url.hasPrefix("redis://") {
            (secure, rest) = (false, url.dropFirst(8))
        } else {
            throw RedisURLError(url: url, reason: "must start with redis:// or rediss://")
        }
        // Credentials first: a password may contain `/`, and nothing of it may reach an error message.
        var username: String?
        if let at = rest.lastIndex(of: "@") {
            let user = rest[..<at]
            if user.contains(":") {
                let redacted = (secure ? "rediss://" : "redis://") + user.prefix { $0 != ":" } + ":***@" + rest[rest.index(after: at)...]
                throw RedisURLError(url: redacted, reason: "a password does not belong in the URL; put it in redis.password_file")
            }
            username = user.isEmpty ? nil : String(user)
            rest = rest[rest.index(after: at)...]
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let number = Self.decimal(path), (0...1_000_000).contains(number) else {
                    throw RedisURLError(url: url, reason: "the path must be a database number (0, 1, …)")
                }
                database = number
            }
            rest = rest[..<slash]
        }
        var host = rest
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw RedisURLError(url: url, reason: "unclosed IPv6 bracket") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Self.decimal(after.dropFirst()), (1...65535).contains(number) else {
                    throw RedisURLError(url: url, reason: "port '\(after.dropFirst())' is not 1-65535")
                }
                port = number
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let number = Self.decimal(rest[rest.index(after: colon)...]), (1...65535).contains(number) else {
                throw RedisURLError(url: url, reason: "port '\(rest[rest.index(after: colon)...])' is not 1-65535")
            }
            port = number
        }
        guard !host.isEmpty else { throw RedisURLError(url: url, reason: "needs a host") }
        // A host name or address: no blanks, controls, or URL delimiters a resolver would read another way.
        guard
            host.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value != 0x7F && !"/?#@[]%".unicodeScalars.contains($0) })
        else { throw RedisURLError(url: url, reason: "host '\(host)' is not a host name or address") }
        self.host = String(host)
        self.port = port
        self.database = database
        self.username = username
        self.serverName = secure ? String(host) : nil
        self.tls = nil
        self.password = nil
        self.connectTimeout = .seconds(2)
        self.commandTimeout = .milliseconds(250)
        self.poolSize = 2
        self.minimumBackoff = .milliseconds(100)
        self.maximumBackoff = .seconds(2)
        self.wantsTLS = secure
    }

    /// `text` as a number written in decimal digits only (`Int` alone also reads `+1`).
    private static func decimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 9, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        return Int(text)
    }

    /// Whether the URL asked for TLS (`rediss://`): then `tls` must be set before connecting.
    public let wantsTLS: Bool

    /// Whether the server is on this machine (`localhost`, 127.0.0.0/8, `::1`): plain `redis://` is then not on any
    /// network.
    public var isLoopback: Bool {
        // Addresses parsed, not prefixes matched (found by review: `127.attacker.example` passed); of names, only
        // `localhost`.
        if host.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }  // ::1
        return bytes[..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF && bytes[12] == 127  // ::ffff:127.x
    }

    /// Why plain `redis://` to this server is risky, or nil (TLS, or loopback). Found by review: `config check` said
    /// nothing, while the password crossed the network in clear and anyone on the path could answer every lease
    /// request with a full grant, switching the shared limits off unseen.
    public var plaintextRisk: String? {
        guard !wantsTLS, !isLoopback else { return nil }
        return "redis://\(address) is plain TCP off this machine: anyone on the network path can read "
            + (password == nil ? "" : "the password (AUTH is sent in clear) and ")
            + "forge Redis's replies, admitting every call; use rediss://"
    }

    /// `host:port`, for logs.
    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A Redis URL that cannot be used.
public struct RedisURLError: Error, Sendable, CustomStringConvertible {
    /// The URL (never carries a password: such URLs are refused).
    public let url: String
    /// What is wrong.
    public let reason: String
    public var description: String { "Redis URL \(url): \(reason)" }
}

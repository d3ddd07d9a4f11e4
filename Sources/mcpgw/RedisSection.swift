import Foundation
import Gateway
import Redis
import StrictJSON
import TLS

/// The configuration's `redis` section: where rate limits are shared across replicas, and how.
enum RedisSection {
    static let keys: Set<String> = [
        "url", "username", "password_file", "tls", "connect_timeout_ms", "command_timeout_ms", "pool_size", "key_prefix",
        "lease_seconds", "max_lease", "replicas", "failure_mode",
    ]
    static let tlsKeys: Set<String> = ["ca_file", "client_certificate", "client_key", "server_name"]

    /// The settings of `reader` (nil: no section), with `url` overriding its URL; tenants' `redis_failure_mode`
    /// come from `tenants`. Relative paths are resolved by `resolve`.
    static func read(
        _ reader: JSONObjectReader?, url override: String?, tenants: JSONObjectReader, resolve: (String) -> String
    ) throws -> SharedLimitSettings? {
        // Checked with or without a `redis` section: a typo'd mode must not wait for the day Redis is configured.
        let failureModes = try tenantFailureModes(tenants)
        guard reader != nil || override != nil else { return nil }
        try reader?.requireOnlyKeys(keys)
        let field = { (key: String) in reader?.fieldPath(key) ?? "redis.\(key)" }
        guard let url = try override ?? reader?.string("url") else {
            throw JSONFieldError(path: field("url"), reason: "is required (redis://host:port/db or rediss://…)")
        }
        var redis: RedisSettings
        do {
            redis = try RedisSettings(url: url)
        } catch {
            throw JSONFieldError(path: field("url"), reason: error.reason)
        }
        if let reader {
            if let username = try reader.string("username") { redis.username = username }
            if let file = try reader.string("password_file") {
                guard let data = FileManager.default.contents(atPath: resolve(file)) else {
                    throw JSONFieldError(path: field("password_file"), reason: "cannot read \(resolve(file))")
                }
                let password = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                // Found by review: an empty file passed `config check`, and every shared-limited call got 503 for good.
                guard !password.isEmpty else {
                    throw JSONFieldError(path: field("password_file"), reason: "\(resolve(file)) is empty (or only blanks)")
                }
                redis.password = password
            }
            // Bounded: a call waits on these, and a silent Redis must not hold calls for hours.
            if let milliseconds = try reader.int("connect_timeout_ms", in: 1...60_000) {
                redis.connectTimeout = .milliseconds(milliseconds)
            }
            if let milliseconds = try reader.int("command_timeout_ms", in: 1...60_000) {
                redis.commandTimeout = .milliseconds(milliseconds)
            }
            if let size = try positive(reader, "pool_size") {
                guard size <= 64 else { throw JSONFieldError(path: field("pool_size"), reason: "must be 1-64") }
                redis.poolSize = size
            }
        }
        if redis.username != nil && redis.password == nil {
            throw JSONFieldError(
                path: field("username"),
                reason: "needs password_file (AUTH needs the user's password; without it the default user would be used)")
        }
        let tlsReader = try reader?.object("tls")
        try tlsReader?.requireOnlyKeys(tlsKeys)
        if redis.wantsTLS || tlsReader != nil {
            guard redis.wantsTLS else { throw JSONFieldError(path: field("tls"), reason: "needs a rediss:// URL") }
            let certificate = try tlsReader?.string("client_certificate").map(resolve)
            let key = try tlsReader?.string("client_key").map(resolve)
            if (certificate == nil) != (key == nil) {
                throw JSONFieldError(path: field("tls"), reason: "client_certificate needs client_key too (and the other way round)")
            }
            var configuration = TLSConfiguration(
                certificateChainFile: certificate, privateKeyFile: key,
                trustedCABundles: [
                    .init(label: "redis", path: try tlsReader?.string("ca_file").map(resolve) ?? UpstreamConfiguration.systemCABundle)
                ])
            configuration.verifyServerCertificate = true
            do {
                redis.tls = try TLSContext(role: .client, configuration: configuration)
            } catch {
                throw JSONFieldError(path: field("tls"), reason: "\(error)")
            }
            if let name = try tlsReader?.string("server_name") { redis.serverName = name }
        }
        var settings = SharedLimitSettings(redis: redis)
        if let reader {
            if let prefix = try reader.string("key_prefix") {
                guard !prefix.isEmpty, prefix.utf8.count <= 64 else {
                    throw JSONFieldError(path: field("key_prefix"), reason: "must be 1-64 bytes")
                }
                settings.keyPrefix = prefix
            }
            if let seconds = try reader.double("lease_seconds") {
                guard seconds > 0, seconds <= 10 else { throw JSONFieldError(path: field("lease_seconds"), reason: "must be in (0, 10]") }
                settings.leaseSeconds = seconds
            }
            if let lease = try reader.int("max_lease", in: 1...1_000_000) { settings.maximumLease = lease }
            if let replicas = try reader.int("replicas", in: 1...1_024) { settings.replicas = replicas }
            if let mode = try reader.string("failure_mode") {
                guard let parsed = SharedLimitFailureMode(rawValue: mode) else {
                    throw JSONFieldError(path: field("failure_mode"), reason: "must be fail_closed or local_fallback")
                }
                settings.defaultFailureMode = parsed
            }
        }
        settings.failureModes = failureModes
        return settings
    }

    /// The tenants' `redis_failure_mode`s.
    private static func tenantFailureModes(_ tenants: JSONObjectReader) throws -> [String: SharedLimitFailureMode] {
        var modes: [String: SharedLimitFailureMode] = [:]
        for (tenant, tenantReader) in try tenants.objectMembers() {
            guard let mode = try tenantReader.string("redis_failure_mode") else { continue }
            guard let parsed = SharedLimitFailureMode(rawValue: mode) else {
                throw JSONFieldError(path: tenantReader.fieldPath("redis_failure_mode"), reason: "must be fail_closed or local_fallback")
            }
            modes[tenant] = parsed
        }
        return modes
    }

    private static func positive(_ reader: JSONObjectReader, _ key: String) throws -> Int? {
        guard let value = try reader.int(key) else { return nil }
        guard value > 0 else { throw JSONFieldError(path: reader.fieldPath(key), reason: "must be positive") }
        return value
    }
}

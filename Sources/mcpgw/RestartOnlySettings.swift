import Foundation
import Identity
import StrictJSON

/// The settings of a configuration file that a reload does not apply: everything except what the reload re-reads
/// (the TLS material, the admin listener's TLS material, the identity settings behind the authenticator, tenants'
/// client CAs, CRLs and JWT keys). Listen addresses, limits, upstreams, policy and audit paths, sessions, whether the
/// admin listener has TLS, Redis, OAuth metadata and keys fetched over HTTPS are read once, at start.
///
/// The reload compares them with those in force and names what changed, so that an operator who edited one of them
/// is told it needs a restart instead of being told the reload succeeded.
struct RestartOnlySettings: Sendable {
    /// The restart-only part of the document, with object members sorted (member order is not a change).
    let document: JSONValue

    /// What a reload re-reads, per place in the document: `tls` except `insecure_plain_http`, `admin.tls`, `identity` except
    /// `public_url` and `oauth`, and in each tenant its CAs, CRLs, SPIFFE settings and `jwt` except the settings of
    /// keys fetched over HTTPS.
    static let reloadedTLSKeys: Set<String> = [
        "certificate_chain", "private_key", "client_auth", "min_version", "verify_depth", "announce_client_cas",
    ]
    static let reloadedIdentityKeys: Set<String> = [
        "audience", "spiffe_trust_domain", "max_token_bytes", "token_cache_size", "leeway_seconds",
    ]
    static let reloadedTenantKeys: Set<String> = ["client_ca", "crl", "spiffe_trust_domain", "agent_from_common_name"]
    static let fetchedJWTKeys: Set<String> = ["jwks_uri", "discovery", "ca_file", "jwks_min_refetch_seconds", "jwks_lifetime_seconds"]

    /// Keys whose values name files read once at start: a file rotated in place at the same path is a change too, so
    /// these are compared by their contents' SHA-256 as well as by their paths.
    static let fileKeys: Set<String> = ["client_certificate", "client_key", "certificate_chain", "private_key", "client_ca", "crl"]

    /// The restart-only settings of the configuration file at `path` (nil when it cannot be read as JSON: the reload
    /// of its other parts says why). Relative file paths are read against the file's directory.
    init?(path: String) {
        guard let data = FileManager.default.contents(atPath: path),
            let value = try? JSONParser.parse(Array(data), limits: JSONLimits(maximumDepth: 32))
        else { return nil }
        let directory = (path as NSString).deletingLastPathComponent
        self.init(document: value) { file in
            let resolved = file.hasPrefix("/") ? file : (directory.isEmpty ? "." : directory) + "/" + file
            // Regular files of a sane size only: a FIFO or a device named in the file must not hold the reload.
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: resolved),
                attributes[.type] as? FileAttributeType == .typeRegular,
                let size = attributes[.size] as? Int, size <= 16 * 1024 * 1024
            else { return nil }
            return FileManager.default.contents(atPath: resolved).map { SHA256Digest(of: Array($0)).hex }
        }
    }

    /// `contents` gives the SHA-256 (hex) of a named file's contents, nil when it cannot be read.
    init(document value: JSONValue, contents: (String) -> String? = { _ in nil }) {
        guard let root = value.objectValue else {
            document = Self.sorted(value)
            return
        }
        // Some reloaded settings are read once at start all the same: the audience of a tenant that introspects
        // tokens (and `identity.audience`, which it defaults to), and the issuer a tenant discovers its keys from.
        let introspects = { (tenant: JSONObject) in tenant["oauth"]?.objectValue?["introspection"] != nil }
        let anyIntrospects =
            root["tenants"]?.objectValue?.members.contains { $0.value.objectValue.map(introspects) ?? false } ?? false
        var kept: [JSONObject.Member] = []
        for member in root.members {
            switch member.key {
            case "tls":
                kept.append(.init(key: "tls", value: Self.without(Self.reloadedTLSKeys, in: member.value)))
            case "admin":
                // The admin listener's TLS material is re-read; whether it has TLS at all is set at start.
                guard let admin = member.value.objectValue else {
                    kept.append(member)
                    continue
                }
                let settings = admin.members.map { $0.key == "tls" ? .init(key: "tls", value: .bool(true)) : $0 }
                kept.append(.init(key: "admin", value: .object(JSONObject(settings))))
            case "identity":
                let reloaded = anyIntrospects ? Self.reloadedIdentityKeys.subtracting(["audience"]) : Self.reloadedIdentityKeys
                kept.append(.init(key: "identity", value: Self.without(reloaded, in: member.value)))
            case "tenants":
                guard let tenants = member.value.objectValue else {
                    kept.append(member)
                    continue
                }
                let restartOnly = tenants.members.map { tenant -> JSONObject.Member in
                    guard let settings = tenant.value.objectValue else { return tenant }
                    var members = settings.members.filter { !Self.reloadedTenantKeys.contains($0.key) }
                    if let index = members.firstIndex(where: { $0.key == "jwt" }), let jwt = members[index].value.objectValue {
                        var readAtStart = Self.fetchedJWTKeys
                        if jwt["discovery"] == .bool(true) { readAtStart.insert("issuers") }
                        if introspects(settings) { readAtStart.insert("audience") }
                        members[index] = .init(key: "jwt", value: .object(JSONObject(jwt.members.filter { readAtStart.contains($0.key) })))
                    }
                    return .init(key: tenant.key, value: .object(JSONObject(members)))
                }
                kept.append(.init(key: "tenants", value: .object(JSONObject(restartOnly))))
            default:
                kept.append(member)
            }
        }
        document = Self.sorted(Self.withoutEmptyObjects(Self.withFileContents(.object(JSONObject(kept)), contents: contents), key: ""))
    }

    /// `value` with every file setting (a key ending in `_file`, or one of `fileKeys`) turned into its path and its
    /// contents' digest; a tenant's `jwt.ca_file` keeps its path only (every key fetch reads it again).
    private static func withFileContents(_ value: JSONValue, contents: (String) -> String?, parent: String = "") -> JSONValue {
        func stamped(_ path: JSONValue) -> JSONValue {
            path.stringValue.map { .string("\($0) sha256:\(contents($0) ?? "unreadable")") } ?? path
        }
        switch value {
        case .object(let object):
            return .object(
                JSONObject(
                    object.members.map { member in
                        let readAgain = parent == "jwt" && member.key == "ca_file"
                        guard !readAgain, member.key.hasSuffix("_file") || fileKeys.contains(member.key) else {
                            return .init(key: member.key, value: withFileContents(member.value, contents: contents, parent: member.key))
                        }
                        if case .array(let paths) = member.value { return .init(key: member.key, value: .array(paths.map(stamped))) }
                        return .init(key: member.key, value: stamped(member.value))
                    }))
        case .array(let elements):
            return .array(elements.map { withFileContents($0, contents: contents, parent: parent) })
        default:
            return value
        }
    }

    /// `value` (the member `key`) without members whose value is an object left empty (a section of reloaded settings
    /// only: adding or removing it changes nothing a restart would apply). A tenant stays, empty or not: tenants
    /// added or removed need a restart for what is set once per tenant at start (`--upstream`, a single policy file).
    private static func withoutEmptyObjects(_ value: JSONValue, key: String) -> JSONValue {
        guard case .object(let object) = value else { return value }
        return .object(
            JSONObject(
                object.members.compactMap { member in
                    let inner = withoutEmptyObjects(member.value, key: member.key)
                    if key != "tenants", case .object(let nested) = inner, nested.members.isEmpty { return nil }
                    return .init(key: member.key, value: inner)
                }))
    }

    /// The places (dotted paths, at most four levels deep) where `other` differs from these settings.
    func changes(comparedWith other: RestartOnlySettings) -> [String] {
        var found: [String] = []
        Self.differences(document, other.document, path: "", depth: 0, into: &found)
        return found
    }

    private static func differences(_ old: JSONValue, _ new: JSONValue, path: String, depth: Int, into found: inout [String]) {
        guard old != new else { return }
        // A section present on one side only is compared with an empty one, so that its settings are named.
        let empty = JSONObject([])
        guard depth < 4, let before = old.objectValue ?? (old == .null ? empty : nil),
            let after = new.objectValue ?? (new == .null ? empty : nil)
        else {
            found.append(path.isEmpty ? "(the whole file)" : path)
            return
        }
        let keys = Set(before.members.map(\.key)).union(after.members.map(\.key)).sorted()
        for key in keys {
            let here = path.isEmpty ? key : path + "." + key
            // A tenant added is a change even when it has no restart-only setting of its own: its upstream
            // (`--upstream`) and its share of everything set per tenant are made at start (found by review: a tenant
            // added by reload was reported as fully applied, and its calls got 502).
            if path == "tenants", before[key] == nil, after[key] != nil {
                found.append(here + " (added)")
                continue
            }
            // A tenant removed is dropped by the reload at once, from the authenticator and the required policies: no
            // restart is owed for it (found by review: its restart-only settings were compared with none, named as
            // still in force, and that reload and every later one reported failure).
            if path == "tenants", before[key] != nil, after[key] == nil { continue }
            differences(before[key] ?? .null, after[key] ?? .null, path: here, depth: depth + 1, into: &found)
        }
    }

    private static func without(_ keys: Set<String>, in value: JSONValue) -> JSONValue {
        guard let object = value.objectValue else { return value }
        return .object(JSONObject(object.members.filter { !keys.contains($0.key) }))
    }

    private static func sorted(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object):
            .object(JSONObject(object.members.sorted { $0.key < $1.key }.map { .init(key: $0.key, value: sorted($0.value)) }))
        case .array(let elements):
            .array(elements.map(sorted))
        default:
            value
        }
    }
}

import Foundation
import StrictJSON

/// The settings of a configuration file that a reload does not apply: everything except what the reload re-reads
/// (the TLS material, the identity settings behind the authenticator, tenants' client CAs, CRLs and JWT keys).
/// Listen address, limits, upstreams, policy and audit paths, sessions, admin, Redis, OAuth metadata and keys fetched
/// over HTTPS are read once, at start.
///
/// The reload compares them with those in force and names what changed, so that an operator who edited one of them
/// is told it needs a restart instead of being told the reload succeeded.
struct RestartOnlySettings: Sendable {
    /// The restart-only part of the document, with object members sorted (member order is not a change).
    let document: JSONValue

    /// What a reload re-reads, per place in the document: `tls` except `insecure_plain_http`, `identity` except
    /// `public_url` and `oauth`, and in each tenant its CAs, CRLs, SPIFFE settings and `jwt` except the settings of
    /// keys fetched over HTTPS.
    static let reloadedTLSKeys: Set<String> = ["certificate_chain", "private_key", "client_auth", "min_version", "verify_depth"]
    static let reloadedIdentityKeys: Set<String> = [
        "audience", "spiffe_trust_domain", "max_token_bytes", "token_cache_size", "leeway_seconds",
    ]
    static let reloadedTenantKeys: Set<String> = ["client_ca", "crl", "spiffe_trust_domain", "agent_from_common_name"]
    static let fetchedJWTKeys: Set<String> = ["jwks_uri", "discovery", "ca_file", "jwks_min_refetch_seconds", "jwks_lifetime_seconds"]

    /// The restart-only settings of the configuration file at `path` (nil when it cannot be read as JSON: the reload
    /// of its other parts says why).
    init?(path: String) {
        guard let data = FileManager.default.contents(atPath: path),
            let value = try? JSONParser.parse(Array(data), limits: JSONLimits(maximumDepth: 32))
        else { return nil }
        self.init(document: value)
    }

    init(document value: JSONValue) {
        guard let root = value.objectValue else {
            document = Self.sorted(value)
            return
        }
        var kept: [JSONObject.Member] = []
        for member in root.members {
            switch member.key {
            case "tls":
                kept.append(.init(key: "tls", value: Self.without(Self.reloadedTLSKeys, in: member.value)))
            case "identity":
                kept.append(.init(key: "identity", value: Self.without(Self.reloadedIdentityKeys, in: member.value)))
            case "tenants":
                guard let tenants = member.value.objectValue else {
                    kept.append(member)
                    continue
                }
                let restartOnly = tenants.members.map { tenant -> JSONObject.Member in
                    guard let settings = tenant.value.objectValue else { return tenant }
                    var members = settings.members.filter { !Self.reloadedTenantKeys.contains($0.key) }
                    if let index = members.firstIndex(where: { $0.key == "jwt" }), let jwt = members[index].value.objectValue {
                        members[index] = .init(
                            key: "jwt", value: .object(JSONObject(jwt.members.filter { Self.fetchedJWTKeys.contains($0.key) })))
                    }
                    return .init(key: tenant.key, value: .object(JSONObject(members)))
                }
                kept.append(.init(key: "tenants", value: .object(JSONObject(restartOnly))))
            default:
                kept.append(member)
            }
        }
        document = Self.sorted(.object(JSONObject(kept)))
    }

    /// The places (dotted paths, at most four levels deep) where `other` differs from these settings.
    func changes(comparedWith other: RestartOnlySettings) -> [String] {
        var found: [String] = []
        Self.differences(document, other.document, path: "", depth: 0, into: &found)
        return found
    }

    private static func differences(_ old: JSONValue, _ new: JSONValue, path: String, depth: Int, into found: inout [String]) {
        guard old != new else { return }
        guard depth < 4, let before = old.objectValue, let after = new.objectValue else {
            found.append(path.isEmpty ? "(the whole file)" : path)
            return
        }
        let keys = Set(before.members.map(\.key)).union(after.members.map(\.key)).sorted()
        for key in keys {
            let here = path.isEmpty ? key : path + "." + key
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

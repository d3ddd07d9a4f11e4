import Synchronization

import struct Foundation.Date

/// Remembers tokens that verified, so that a client reusing its token does not cost an RSA verification per
/// request. Keyed by the SHA-256 of the token; an entry is used only inside the window the token itself allows
/// (`nbf`/`iat` to `exp`, with leeway), so a cached answer never differs from a fresh verification.
///
/// Bounded: at `capacity` entries, expired ones are dropped first, then entries of the tenant holding the most
/// (arbitrary ones of it) until an eighth of the capacity is free, or that tenant has none left. So a tenant whose identity provider mints tokens without end
/// (or whose agents hold very many) evicts its own entries, never another tenant's smaller set; one tenant alone may
/// still use the whole cache. The cost of an eviction is a fresh verification for the dropped tokens, never a wrong
/// answer.
final class VerifiedTokenCache: Sendable {
    private struct Entry {
        let token: VerifiedToken
        let acceptedUntil: Date
    }

    private struct State {
        var entries: [SHA256Digest: Entry] = [:]
        /// Entries per tenant.
        var perTenant: [String: Int] = [:]

        mutating func remove(_ digest: SHA256Digest) {
            guard let entry = entries.removeValue(forKey: digest) else { return }
            let left = perTenant[entry.token.tenant, default: 1] - 1
            perTenant[entry.token.tenant] = left > 0 ? left : nil
        }
    }

    private let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The cached result for this token digest, if still valid at `now`.
    func lookup(_ digest: SHA256Digest, now: Date) -> VerifiedToken? {
        state.withLock { state in
            guard let entry = state.entries[digest] else { return nil }
            guard now < entry.acceptedUntil else {
                state.remove(digest)
                return nil
            }
            if let from = entry.token.acceptedFrom, now < from { return nil }
            return entry.token
        }
    }

    /// Stores a verified token; tokens without an expiry are not cached.
    func store(_ digest: SHA256Digest, _ token: VerifiedToken, now: Date) {
        guard capacity > 0, let until = token.acceptedUntil, now < until else { return }
        state.withLock { state in
            if state.entries[digest] == nil && state.entries.count >= capacity {
                // Expired entries first, found before any is removed (removing while iterating copied the dictionary).
                let expired = state.entries.compactMap { $0.value.acceptedUntil <= now ? $0.key : nil }
                for key in expired { state.remove(key) }
                // Then room for an eighth of the capacity, so that a full cache whose tokens expire one at a time does
                // not scan itself on every insert (found by review), taken from the tenant holding the most entries
                // only (found by an earlier review: an eighth of the whole cache went, whichever tenant's, so one
                // tenant minting tokens emptied every other tenant's entries). When that tenant holds less, less room
                // is made: never another tenant's smaller set.
                let keep = capacity - max(1, capacity / 8)
                if state.entries.count > keep, let largest = state.perTenant.max(by: { $0.value < $1.value })?.key {
                    let victims = state.entries.lazy.filter { $0.value.token.tenant == largest }.prefix(state.entries.count - keep)
                    for key in Array(victims.map(\.key)) { state.remove(key) }
                }
            }
            if state.entries.updateValue(Entry(token: token, acceptedUntil: until), forKey: digest) == nil {
                state.perTenant[token.tenant, default: 0] += 1
            }
        }
    }

    /// How many tokens are cached.
    var count: Int { state.withLock { $0.entries.count } }
}

/// How often verified-token caches answered, process-wide (for metrics): a hit is a token answered from a cache, a
/// miss one that needed a signature check.
public enum TokenCacheStatistics {
    static let hits = Atomic<Int>(0)
    static let misses = Atomic<Int>(0)

    /// The counts since the process started.
    public static var current: (hits: Int, misses: Int) {
        (hits.load(ordering: .relaxed), misses.load(ordering: .relaxed))
    }
}

import Synchronization

import struct Foundation.Date

/// Remembers tokens that verified, so that a client reusing its token does not cost an RSA verification per
/// request. Keyed by the SHA-256 of the token; an entry is used only inside the window the token itself allows
/// (`nbf`/`iat` to `exp`, with leeway), so a cached answer never differs from a fresh verification.
///
/// Bounded: at `capacity` entries, expired ones are dropped first, then an eighth of the rest (arbitrary ones);
/// the cost of that is a fresh verification for the dropped tokens, never a wrong answer.
final class VerifiedTokenCache: Sendable {
    private struct Entry {
        let token: VerifiedToken
        let acceptedUntil: Date
    }

    private let capacity: Int
    private let entries = Mutex<[SHA256Digest: Entry]>([:])

    init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The cached result for this token digest, if still valid at `now`.
    func lookup(_ digest: SHA256Digest, now: Date) -> VerifiedToken? {
        entries.withLock { entries in
            guard let entry = entries[digest] else { return nil }
            guard now < entry.acceptedUntil else {
                entries[digest] = nil
                return nil
            }
            if let from = entry.token.acceptedFrom, now < from { return nil }
            return entry.token
        }
    }

    /// Stores a verified token; tokens without an expiry are not cached.
    func store(_ digest: SHA256Digest, _ token: VerifiedToken, now: Date) {
        guard capacity > 0, let until = token.acceptedUntil, now < until else { return }
        entries.withLock { entries in
            if entries.count >= capacity {
                entries = entries.filter { now < $0.value.acceptedUntil }
                if entries.count >= capacity {
                    for key in entries.keys.prefix(max(1, capacity / 8)) { entries[key] = nil }
                }
            }
            entries[digest] = Entry(token: token, acceptedUntil: until)
        }
    }

    /// How many tokens are cached.
    var count: Int { entries.withLock { $0.count } }
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

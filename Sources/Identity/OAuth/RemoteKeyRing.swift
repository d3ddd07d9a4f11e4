import Synchronization

/// The signing keys fetched over HTTPS, per tenant, as the verifier reads them. The gateway's fetchers replace a
/// tenant's set as a whole when a fetch succeeds and leave it alone when one fails, so the last good set stays in
/// force. It outlives reloads: a new verifier built on SIGHUP reads the same ring.
public final class RemoteKeyRing: Sendable {
    private let sets = Mutex<[String: (generation: Int, keys: [JWTVerificationKey])]>([:])
    private let observers = Mutex<[@Sendable (String) -> Void]>([])

    /// An empty ring.
    public init() {}

    /// The keys fetched for `tenant` (empty before the first successful fetch).
    public func keys(for tenant: String) -> [JWTVerificationKey] { sets.withLock { $0[tenant]?.keys ?? [] } }

    /// The keys fetched for `tenant` and the generation of that set (0 before the first fetch).
    public func keySet(for tenant: String) -> (generation: Int, keys: [JWTVerificationKey]) {
        sets.withLock { $0[tenant] ?? (0, []) }
    }

    /// How many times `tenant`'s set has been replaced: tokens verified under an earlier generation are verified again.
    public func generation(for tenant: String) -> Int { sets.withLock { $0[tenant]?.generation ?? 0 } }

    /// Puts `keys` in force for `tenant`, as a new generation; tells the observers when a key of the previous set (by
    /// id and algorithm) is no longer in it. The same keys again (a refetch that found nothing new) keep the set's
    /// generation: tokens verified under it stay verified (found by review: each refetch for an unknown `kid`, which
    /// any caller can provoke, emptied the tenant's token cache and sent every agent back to the signature threads).
    public func replace(_ keys: [JWTVerificationKey], for tenant: String) {
        // Compared outside the lock, which every cache hit takes (a large set compares many keys).
        let previous = sets.withLock { $0[tenant] }
        let unchanged = previous.map { Self.sameKeys($0.keys, keys) } ?? false
        let withdrawn = sets.withLock { sets -> Bool in
            let current = sets[tenant]
            if unchanged, let current, current.generation == previous?.generation { return false }
            sets[tenant] = ((current?.generation ?? 0) + 1, keys)
            // A key withdrawn is one whose material is gone, even if its id stays (found by review: judged by id and
            // algorithm only, new material under an old id never had listening streams checked again).
            let old = current?.keys ?? []
            return old.contains { old in !keys.contains { $0.isSameKey(as: old) } }
        }
        if withdrawn { for observer in observers.withLock({ $0 }) { observer(tenant) } }
    }

    /// Whether `a` and `b` hold the same keys (ids, algorithms and material), each as often, in any order. Keys are
    /// compared only within a group of one id and algorithm (usually one key), both ways: a set that repeats one key
    /// in place of another is a change (found by review).
    static func sameKeys(_ a: [JWTVerificationKey], _ b: [JWTVerificationKey]) -> Bool {
        guard a.count == b.count else { return false }
        struct Group: Hashable {
            let keyID: String?
            let algorithm: JWTAlgorithm
        }
        let groupsA = Dictionary(grouping: a) { Group(keyID: $0.keyID, algorithm: $0.algorithm) }
        let groupsB = Dictionary(grouping: b) { Group(keyID: $0.keyID, algorithm: $0.algorithm) }
        guard groupsA.count == groupsB.count else { return false }
        for (group, keysA) in groupsA {
            guard let keysB = groupsB[group], keysA.count == keysB.count,
                keysA.allSatisfy({ key in keysB.contains { $0.isSameKey(as: key) } }),
                keysB.allSatisfy({ key in keysA.contains { $0.isSameKey(as: key) } })
            else { return false }
        }
        return true
    }

    /// Calls `observer` with the tenant whose fetched set no longer holds a key it held.
    public func onKeysWithdrawn(_ observer: @escaping @Sendable (String) -> Void) {
        observers.withLock { $0.append(observer) }
    }
}

import Synchronization

/// Request ids: a random per-process prefix and a counter, so ids are unique across replicas and restarts without
/// drawing random numbers per request.
final class RequestIDs: Sendable {
    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init() {
        var generator = SystemRandomNumberGenerator()
        let random = generator.next() as UInt64
        prefix = String(random & 0xFFFF_FFFF_FFFF, radix: 16) + "-"
    }

    /// The next id.
    func next() -> String {
        let value = counter.wrappingAdd(1, ordering: .relaxed).newValue
        return prefix + String(value, radix: 16)
    }
}

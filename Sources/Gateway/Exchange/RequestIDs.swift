import Synchronization
import TLS

/// Request ids: a random per-process prefix and a counter, so ids are unique across replicas and restarts without
/// drawing random numbers per request.
final class RequestIDs: Sendable {
    private let prefix: [UInt8]
    private let counter = Atomic<UInt64>(0)

    init() {
        var generator = SystemRandomNumberGenerator()
        let random = generator.next() as UInt64
        prefix = Array((String(random & 0xFFFF_FFFF_FFFF, radix: 16) + "-").utf8)
    }

    /// The next id.
    func next() -> String {
        let value = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let digits = max(1, (UInt64.bitWidth - value.leadingZeroBitCount + 3) / 4)
        // Written straight into the string's storage: this runs for every request.
        return String(unsafeUninitializedCapacity: prefix.count + digits) { text in
            for (index, byte) in prefix.enumerated() { text[index] = byte }
            for position in 0..<digits {
                let shift = UInt64(4 * (digits - 1 - position))
                text[prefix.count + position] = HexText.digit(UInt8(truncatingIfNeeded: value >> shift) & 0xF)
            }
            return prefix.count + digits
        }
    }
}

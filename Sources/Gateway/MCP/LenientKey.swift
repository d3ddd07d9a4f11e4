/// Member names as a lenient server reads them. The Python SDK accepts `resource_subscriptions` for
/// `resourceSubscriptions` and `task_id` for `taskId` (pydantic aliases), and other servers fold case: Go's
/// `encoding/json` matches a member to a field ignoring case, by Unicode's simple folding, so `ſ` (U+017F) reads as
/// `s` and the Kelvin sign (U+212A) as `k`, and the last spelling wins. A member the gateway does not recognise but
/// the server does would carry past the gateway's checks whatever they cover. So where the gateway decides or
/// rewrites by a member, every spelling that reads as it counts.
enum LenientKey {
    /// Whether `key` reads as `canonical` (given in lower case, ASCII letters only) with case, `_` and `-` ignored,
    /// and `ſ` and `K` taken as the letters they fold to.
    static func matches(_ key: String, _ canonical: StaticString) -> Bool {
        var letters = key.unicodeScalars.lazy.filter { $0 != "_" && $0 != "-" }.makeIterator()
        let expected = UnsafeBufferPointer(start: canonical.utf8Start, count: canonical.utf8CodeUnitCount)
        for byte in expected {
            guard let next = letters.next(), folded(next) == byte else { return false }
        }
        return letters.next() == nil
    }

    /// Whether `key` reads as `canonical` (as `matches` has it) without being exactly it: a spelling the gateway
    /// would pass over and a lenient server would take for the member.
    static func isVariant(_ key: String, of canonical: StaticString) -> Bool {
        key != canonical.description && matches(key, canonical)
    }

    /// The lower-case ASCII letter `scalar` folds to (0 when it is no letter that folds to one).
    private static func folded(_ scalar: Unicode.Scalar) -> UInt8 {
        switch scalar.value {
        case 0x41...0x5A, 0x61...0x7A: UInt8(scalar.value) | 0x20
        case 0x017F: UInt8(ascii: "s")
        case 0x212A: UInt8(ascii: "k")
        default: 0
        }
    }
}

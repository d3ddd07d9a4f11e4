/// Member names as a lenient server reads them. The Python SDK accepts `resource_subscriptions` for
/// `resourceSubscriptions` and `task_id` for `taskId` (pydantic aliases), and other servers fold case: a member the
/// gateway does not recognise but the server does would carry past the gateway's checks whatever they cover. So where
/// the gateway decides or rewrites by a member, every spelling that reads as it counts.
enum LenientKey {
    /// Whether `key` reads as `canonical` (given in lower case, ASCII letters only) with case, `_` and `-` ignored.
    static func matches(_ key: String, _ canonical: StaticString) -> Bool {
        var letters = key.utf8.lazy.filter { $0 != UInt8(ascii: "_") && $0 != UInt8(ascii: "-") }.makeIterator()
        let expected = UnsafeBufferPointer(start: canonical.utf8Start, count: canonical.utf8CodeUnitCount)
        for byte in expected {
            guard let next = letters.next(), next | 0x20 == byte else { return false }
        }
        return letters.next() == nil
    }
}

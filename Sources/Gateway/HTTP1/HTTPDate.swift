import Glibc

/// The `Date` header field of responses (RFC 9110 §6.6.1: `Date: Sun, 06 Nov 1994 08:49:37 GMT`), rendered once per
/// second per connection: the clock is read for each response (a vDSO call), the text made only when the second
/// changes. Without Foundation.
struct HTTPDate {
    private var second: time_t = -1
    /// `Date: <IMF-fixdate>\r\n`, for `second`.
    private var field: [UInt8] = []

    /// The `Date` field line for now.
    mutating func currentField() -> [UInt8] {
        let now = time(nil)
        if now != second {
            second = now
            field = Self.field(for: now)
        }
        return field
    }

    /// `Date: <IMF-fixdate>\r\n` for `seconds` since the epoch.
    static func field(for seconds: time_t) -> [UInt8] {
        var clock = seconds
        var parts = tm()
        gmtime_r(&clock, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let text =
            "Date: \(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT\r\n"
        return Array(text.utf8)
    }
}

/// A token bucket: holds up to `burst` tokens, refills at `rate` tokens per second, a call takes one.
public struct TokenBucket: Sendable, Hashable {
    /// Tokens now (fractional).
    public private(set) var tokens: Double
    /// When `tokens` was last brought up to date, in seconds of the limiter's clock.
    public private(set) var updated: Double

    /// A full bucket at time `now`.
    public init(burst: Double, now: Double) {
        tokens = burst
        updated = now
    }

    /// Refills for the time since the last update (never above `burst`, never backwards in time).
    public mutating func refill(rate: Double, burst: Double, now: Double) {
        if now > updated {
            tokens = min(burst, tokens + (now - updated) * rate)
            updated = now
        }
        tokens = min(tokens, burst)
    }

    /// Whether a token is there (after `refill`).
    public var hasToken: Bool { tokens >= 1 }

    /// Takes a token; call only when `hasToken`.
    public mutating func take() { tokens -= 1 }

    /// Returns a token taken for a call that did not go through, never above `burst`.
    public mutating func giveBack(burst: Double) { tokens = min(burst, tokens + 1) }

    /// Seconds until a token will be there at `rate`.
    public func secondsUntilToken(rate: Double) -> Double { max(0, (1 - tokens) / rate) }

    /// Whether the bucket is full at `burst`, i.e. indistinguishable from a new one (safe to forget).
    public func isFull(burst: Double) -> Bool { tokens >= burst }
}

import Policy

/// The shared limits as a call's last decision attempt sees them: a bucket with nothing on hand refuses the call
/// (rate limited, retry in a second) instead of asking Redis once more. A call gets here only when the leases it
/// waited for were spent by concurrent calls several times over, i.e. when the bucket is being drained as fast as
/// Redis refills it; the refusal is an ordinary rate-limit refusal, with the call's id and the limit's id.
struct LastAttemptLimits: SharedRateLimits {
    let limiter: SharedLimiter

    func isShared(_ limit: RateLimitRule) -> Bool { limiter.isShared(limit) }

    func take(_ buckets: [SharedBucket], now: Double) -> SharedTake {
        let answer = limiter.take(buckets, now: now)
        guard case .mustAsk(let missing) = answer else { return answer }
        return .refused(index: buckets.firstIndex { $0 == missing.first } ?? 0, retryAfter: 1, fallback: false)
    }

    func giveBack(_ tokens: SharedTokens, now: Double) {
        limiter.giveBack(tokens, now: now)
    }

    func placed(_ buckets: [SharedBucket]) -> [SharedBucket] { limiter.placed(buckets) }
}

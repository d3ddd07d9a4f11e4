import Policy
import Redis

import class Foundation.NSString

/// The token bucket as Redis keeps it (Redis 5 or later; on 3.2 and 4 the script asks for effects replication, which
/// `TIME` before a write needs): a hash per bucket (`t`: tokens, `u`: when they were counted, in Redis's own
/// microseconds), refilled and taken from atomically by one Lua script, so that any number of replicas share it
/// exactly. Redis's clock is the only clock involved: replicas' clocks may disagree without effect.
///
/// The script grants up to the requested number of whole tokens (a lease), fewer when fewer are there; when less
/// than a whole token is left, it says in how many microseconds one will be. A bucket's key expires once it would have refilled completely
/// (a full bucket and no bucket are the same), so idle agents leave nothing behind.
///
/// A key counted in an overflow bucket comes with its own key second: the script charges that key when it exists
/// (some replica keeps the key as itself, and every replica must count it there), and otherwise the overflow bucket,
/// and then makes the key's own bucket as drained by what it granted (so that a replica counting the key as itself
/// finds those calls counted: found by review, an agent drained the overflow bucket through one replica and the key's
/// fresh bucket through another). Only a grant makes a key, and it lives until its tokens are back: the overflow bucket
/// bounds the keys made so to its burst and refill over that time. The reply's third value says which bucket was
/// charged (1: the key's own).
enum TokenBucketScript {
    static let script = RedisScript(
        """
        if redis.replicate_commands then redis.replicate_commands() end
        local rate = tonumber(ARGV[1])
        local burst = tonumber(ARGV[2])
        local want = tonumber(ARGV[3])
        local key = KEYS[1]
        local own = 0
        if KEYS[2] ~= nil and redis.call('EXISTS', KEYS[2]) == 1 then
          key = KEYS[2]
          own = 1
        end
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
        local state = redis.call('HMGET', key, 't', 'u')
        local tokens = tonumber(state[1])
        local updated = tonumber(state[2])
        if tokens == nil or updated == nil then
          tokens = burst
          updated = now
        end
        if tokens ~= tokens or tokens < 0 or tokens == math.huge then tokens = 0 end
        if updated ~= updated or updated == math.huge or updated == -math.huge then updated = now end
        if updated > now then updated = now end
        if now > updated then
          tokens = tokens + (now - updated) * rate / 1000000
          updated = now
        end
        if tokens > burst then tokens = burst end
        local granted = math.floor(tokens)
        if granted > want then granted = want end
        if granted < 0 then granted = 0 end
        tokens = tokens - granted
        redis.call('HSET', key, 't', string.format('%.17g', tokens), 'u', string.format('%.17g', updated))
        local ttl = math.ceil((burst - tokens) / rate * 1000) + 1000
        if ttl > 1000000000000 then ttl = 1000000000000 end
        redis.call('PEXPIRE', key, ttl)
        if KEYS[2] ~= nil and own == 0 and granted > 0 then
          redis.call('HSET', KEYS[2], 't', string.format('%.17g', burst - granted), 'u', string.format('%.17g', now))
          local drained = math.ceil(granted / rate * 1000) + 1000
          if drained > 1000000000000 then drained = 1000000000000 end
          redis.call('PEXPIRE', KEYS[2], drained)
        end
        local wait = 0
        if tokens < 1 then wait = math.ceil((1 - tokens) * 1000000 / rate) end
        if wait > 1000000000000000 then wait = 1000000000000000 end
        return {granted, wait, own}
        """)

    /// The keys the script is run on for `bucket`: its own key, or for a key counted in an overflow bucket, the
    /// overflow bucket's key and then its own.
    static func keys(_ bucket: SharedBucket, prefix: String) -> [[UInt8]] {
        let own = key(tenant: bucket.tenant, limit: bucket.limit.id, agent: bucket.keyAgent, tool: bucket.keyTool, prefix: prefix)
        guard let overflowAgent = bucket.overflowAgent else { return [own] }
        var overflow = key(tenant: bucket.tenant, limit: bucket.limit.id, agent: overflowAgent, tool: "", prefix: prefix)
        // A fifth part no escaped name can spell (`%` is always followed by two hex digits in the others).
        overflow += Array(":%overflow".utf8)
        return [overflow, own]
    }

    /// The key of `bucket` itself (for a key counted in an overflow bucket, the overflow bucket's): see `keys`.
    static func key(_ bucket: SharedBucket, prefix: String) -> [UInt8] { keys(bucket, prefix: prefix)[0] }

    /// The key of a bucket: the prefix, then tenant, limit, agent and tool, each in NFC and escaped so that no two
    /// buckets share a key (`%` and `:` are percent-encoded, as are control bytes).
    ///
    /// NFC because the gateway compares names by canonical equivalence (Swift strings): `café` composed and decomposed
    /// are one tool to the policy, one local bucket and one lease, so they must be one Redis key too. Keyed by bytes,
    /// one replica kept the lease under the first spelling it saw and another under the other, and an agent
    /// alternating spellings got twice the limit.
    private static func key(tenant: String, limit: String, agent: String, tool: String, prefix: String) -> [UInt8] {
        var key = Array(prefix.utf8)
        for (index, part) in [tenant, limit, agent, tool].enumerated() {
            if index > 0 { key.append(UInt8(ascii: ":")) }
            for byte in canonicalComposition(part).utf8 {
                if byte == UInt8(ascii: "%") || byte == UInt8(ascii: ":") || byte < 0x20 || byte == 0x7F {
                    let hex = Array("0123456789ABCDEF".utf8)
                    key += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
                } else {
                    key.append(byte)
                }
            }
        }
        return key
    }

    /// `text` in Unicode normalisation form C (ASCII, the common case, is its own).
    static func canonicalComposition(_ text: String) -> String {
        text.utf8.allSatisfy { $0 < 0x80 } ? text : text.precomposedStringWithCanonicalMapping
    }

    /// The script's arguments for a lease of `want` tokens of `limit`.
    static func arguments(_ limit: RateLimitRule, want: Int) -> [[UInt8]] {
        [Array(String(limit.ratePerSecond).utf8), Array(String(limit.burst).utf8), Array(String(want).utf8)]
    }

    /// Granted tokens, the wait (seconds) until the bucket holds a whole token again (0: it holds one now), and whether
    /// the bucket charged was an overflowed key's own, from the script's reply to a request for `want` tokens. Nil when
    /// the reply is not the script's: anything but three integers (the third 0 or 1), a grant of more than was asked (which would admit beyond the limit, and in the extreme overflow
    /// the lease's count: the default `redis://` is plain TCP, so a reply may be forged on the way), or a wait longer
    /// than one token takes to refill at `rate` (the script never says more; found by review: a forged wait of 31
    /// years refused an agent for good, Redis never asked again).
    static func grant(_ reply: RESPValue, want: Int, rate: Double) -> (granted: Int, wait: Double, chargedOwnKey: Bool)? {
        guard case .array(let values?) = reply, values.count == 3, let granted = values[0].integer, let wait = values[1].integer,
            let own = values[2].integer, own == 0 || own == 1,
            granted >= 0, granted <= want, wait >= 0, Double(wait) <= maximumWaitMicroseconds(rate: rate)
        else { return nil }
        return (Int(granted), Double(wait) / 1e6, own == 1)
    }

    /// The longest wait the script answers at `rate`: a whole token's refill, rounded up, within its cap.
    static func maximumWaitMicroseconds(rate: Double) -> Double {
        min((1e6 / rate).rounded(.up) + 1, 1e15)
    }
}

import COpenSSL
public import NIOCore

/// A Lua script run by its SHA-1 (`EVALSHA`): the script's text crosses the network only when the server does not
/// have it cached — at first use, and after the server restarted or flushed its scripts (`NOSCRIPT`), when it is
/// sent once with `EVAL`, which also caches it again.
public struct RedisScript: Sendable {
    /// The Lua source.
    public let source: String
    /// Its SHA-1 in lower-case hexadecimal, as Redis names cached scripts.
    public let sha1: String

    /// A script from its source.
    public init(_ source: String) {
        self.source = source
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let bytes = Array(source.utf8)
        let ok = EVP_Digest(bytes, bytes.count, &digest, &length, EVP_sha1(), nil)
        precondition(ok == 1, "libcrypto cannot compute SHA-1")
        sha1 = digest.prefix(Int(length)).map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
    }

    /// Runs the script with `keys` and `arguments` on `client`, from `eventLoop`.
    public func run(
        keys: [[UInt8]], arguments: [[UInt8]], on client: RedisClient, eventLoop: any EventLoop
    ) -> EventLoopFuture<RESPValue> {
        let tail = [Array(String(keys.count).utf8)] + keys + arguments
        return client.send([Array("EVALSHA".utf8), Array(sha1.utf8)] + tail, on: eventLoop).flatMapError { error in
            guard case RedisError.server(let text) = error, text.hasPrefix("NOSCRIPT") else {
                return eventLoop.makeFailedFuture(error)
            }
            return client.send([Array("EVAL".utf8), Array(source.utf8)] + tail, on: eventLoop)
        }
    }
}

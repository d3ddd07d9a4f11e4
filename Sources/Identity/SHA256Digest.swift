internal import COpenSSL
import TLS

/// A SHA-256 digest through libcrypto, for digests other modules need (audit records' argument digests, cache keys).
/// Held inline: taking and writing one allocates nothing.
public struct SHA256Digest: Sendable, Hashable {
    /// The 32 bytes of the digest.
    public let bytes: SIMD32<UInt8>

    /// The digest of `data`.
    public init(of data: UnsafeRawBufferPointer) {
        var digest = SIMD32<UInt8>()
        let length = withUnsafeMutableBytes(of: &digest) { output in
            var length: UInt32 = 0
            guard
                EVP_Digest(
                    data.baseAddress, data.count, output.baseAddress!.assumingMemoryBound(to: UInt8.self), &length,
                    Self.algorithm, nil) == 1
            else { return 0 }
            return Int(length)
        }
        // A digest that is not computed must never stand for one (it keys the verified-token cache): libcrypto fails
        // here only when it cannot allocate a few bytes.
        precondition(length == 32, "libcrypto could not compute a SHA-256 digest")
        bytes = digest
    }

    /// The digest of a string's UTF-8 bytes.
    public init(ofUTF8 text: String) {
        var text = text
        self = text.withUTF8 { SHA256Digest(of: UnsafeRawBufferPointer($0)) }
    }

    /// SHA-256 fetched from libcrypto's default provider once per process. `SHA256()` and `EVP_sha256()` look the
    /// algorithm up again on every call in OpenSSL 3 (a locked search by name, and allocations); this runs twice per
    /// request (the token cache key, the audit record's argument digest). `EVP_sha256()` if the fetch fails.
    nonisolated(unsafe) private static let algorithm: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil) ?? EVP_sha256()

    /// The digest of `data`.
    public init(of data: [UInt8]) {
        self = data.withUnsafeBytes { SHA256Digest(of: $0) }
    }

    /// Feeds the 32 bytes to `hasher` at once (the synthesised conformance fed the vector's 32 lanes one by one; this
    /// runs for every token cache lookup).
    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: bytes) { hasher.combine(bytes: $0) }
    }

    /// Appends the digest as 64 lower-case hexadecimal digits.
    public func appendHex(to text: inout [UInt8]) {
        for index in 0..<32 {
            text.append(HexText.digit(bytes[index] >> 4))
            text.append(HexText.digit(bytes[index] & 0x0f))
        }
    }

    /// The digest as 64 lower-case hexadecimal digits.
    public var hex: String {
        var text: [UInt8] = []
        text.reserveCapacity(64)
        appendHex(to: &text)
        return String(decoding: text, as: UTF8.self)
    }

    /// Lower-case hexadecimal SHA-256 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        SHA256Digest(of: bytes).hex
    }
}

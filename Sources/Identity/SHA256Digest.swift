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
        withUnsafeMutableBytes(of: &digest) { output in
            _ = SHA256(
                data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                output.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        bytes = digest
    }

    /// The digest of `data`.
    public init(of data: [UInt8]) {
        self = data.withUnsafeBytes { SHA256Digest(of: $0) }
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

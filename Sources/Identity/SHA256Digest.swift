import TLS

/// SHA-256 through libcrypto, for digests other modules need (audit records' argument digests).
public enum SHA256Digest {
    /// Lower-case hexadecimal SHA-256 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        HexText.lowercase(JWSCrypto.sha256(bytes))
    }
}

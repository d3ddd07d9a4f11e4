/// SHA-256 through libcrypto, for digests other modules need (audit records' argument digests).
public enum SHA256Digest {
    /// Lower-case hexadecimal SHA-256 of `bytes`.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in JWSCrypto.sha256(bytes) {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}

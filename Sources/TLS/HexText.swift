/// Lower-case hexadecimal text, for fingerprints and digests (shared by the modules above TLS).
public enum HexText {
    /// `bytes` as lower-case hexadecimal without separators (inlinable, so callers in other modules get a
    /// specialised copy instead of a generic walk over the collection).
    @inlinable public static func lowercase(_ bytes: some Collection<UInt8>) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { text in
            var index = 0
            for byte in bytes {
                text[index] = digit(byte >> 4)
                text[index + 1] = digit(byte & 0x0f)
                index += 2
            }
            return index
        }
    }

    /// The ASCII digit for a value below 16.
    @inlinable public static func digit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}

/// Base64url without padding (RFC 7515 §2), decoded strictly: only the URL-safe alphabet, no padding, no
/// whitespace, and no stray bits in the last character — so that one token has exactly one spelling.
public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let decodeTable: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (value, character) in alphabet.enumerated() { table[Int(character)] = Int8(value) }
        return table
    }()

    /// The standard, padded base64 text of `bytes` (RFC 4648 §4), for HTTP headers (Basic credentials, MCP header
    /// values).
    public static func encodeStandard(_ bytes: some Sequence<UInt8>) -> String {
        var encoded = encode(bytes).map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 }
        while encoded.count % 4 != 0 { encoded.append("=") }
        return String(encoded)
    }

    /// The unpadded base64url text of `bytes`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let input = Array(bytes)
        var output = [UInt8]()
        output.reserveCapacity((input.count * 4 + 2) / 3)
        var index = 0
        while index + 3 <= input.count {
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
            output += [18, 12, 6, 0].map { alphabet[Int(chunk >> $0 & 0x3F)] }
            index += 3
        }
        switch input.count - index {
        case 1:
            let chunk = UInt32(input[index]) << 16
            output += [18, 12].map { alphabet[Int(chunk >> $0 & 0x3F)] }
        case 2:
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8
            output += [18, 12, 6].map { alphabet[Int(chunk >> $0 & 0x3F)] }
        default:
            break
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// The bytes of strict unpadded base64url `text`; nil when it is not exactly that.
    public static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        guard text.count % 4 != 1 else { return nil }
        var output = [UInt8]()
        output.reserveCapacity(text.count * 3 / 4)
        var buffer: UInt32 = 0
        var bits = 0
        for character in text {
            let value = decodeTable[Int(character)]
            guard value >= 0 else { return nil }
            buffer = buffer << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        // Leftover bits must be zero (canonical encoding).
        guard buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return output
    }

    /// Decodes a string.
    public static func decode(_ text: String) -> [UInt8]? { decode(Array(text.utf8)) }
}

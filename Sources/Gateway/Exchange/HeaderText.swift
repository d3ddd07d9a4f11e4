/// HTTP header names and values compared byte by byte, ignoring ASCII case, without building lower-cased copies:
/// these comparisons run for every header of every request and response.
enum HeaderText {
    /// Whether header name `name` is `lowercaseName` (given in lower case).
    static func isName(_ name: String, _ lowercaseName: String) -> Bool {
        name.utf8.count == lowercaseName.utf8.count && name.utf8.elementsEqual(lowercaseName.utf8) { lowercased($0) == $1 }
    }

    /// Whether `text` starts with `lowercasePrefix` (given in lower case): `Content-Type: Application/JSON; charset=utf-8`
    /// starts with `application/json`.
    static func hasPrefix(_ text: String, _ lowercasePrefix: String) -> Bool {
        text.utf8.count >= lowercasePrefix.utf8.count
            && zip(text.utf8, lowercasePrefix.utf8).allSatisfy { pair in lowercased(pair.0) == pair.1 }
    }

    /// Whether `text` can go into a header line: no CR, LF or NUL (which would end or cut the line: header injection).
    static func fitsOnOneLine(_ text: String) -> Bool {
        !text.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }
}

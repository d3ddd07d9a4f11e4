/// The fast path of `ArgumentConstraint.pathProblem` for paths made only of printable ASCII (U+0020…U+007E), which is
/// nearly every path an agent sends: the steps of `PathText` worked out on the UTF-8 bytes, with no scalar arrays.
///
/// Printable ASCII has no control, combining or format characters, its only slash or dot look-alike is the backslash
/// (read as `/`), and its only whitespace is the space; so every rule of `PathText` comes down to comparing bytes.
/// `ASCIIPathTests` checks that both ways give the same answer for many generated paths.
enum ASCIIPath {
    /// What the fast path found.
    enum Outcome: Equatable {
        /// The text has a byte outside printable ASCII: `PathText` decides.
        case notASCII
        /// The path's problem, or `nil` when the rule accepts it.
        case decided(String?)
    }

    private static let slash = UInt8(ascii: "/")
    private static let backslash = UInt8(ascii: "\\")
    private static let dot = UInt8(ascii: ".")
    private static let semicolon = UInt8(ascii: ";")
    private static let space = UInt8(ascii: " ")

    /// The problem `rule` finds with `text`, when `text` is printable ASCII.
    static func problem(_ text: String, _ rule: ArgumentConstraint.PathRule) -> Outcome {
        var text = text
        return text.withUTF8 { bytes in
            guard bytes.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else { return .notASCII }
            var start = 0
            while start < bytes.count, bytes[start] == space { start += 1 }
            let body = UnsafeBufferPointer(rebasing: bytes[start...])
            let isRooted = body.first.map(isSlash) ?? false
            let isDrive = body.count >= 2 && body[1] == UInt8(ascii: ":") && isLetter(body[0])
            let isFileURL = body.count >= 5 && startsWithFileScheme(body)
            let isAbsolute = isRooted || body.first == UInt8(ascii: "~") || isDrive || isFileURL
            if isAbsolute && !rule.allowAbsolute { return .decided("absolute path") }
            // The normalised path is built in place (on the stack when short): a segment is appended after a `/`, and
            // `..` takes the last one off again (segments never contain a separator).
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: body.count + 1) { normalised in
                var length = 0
                if isRooted {
                    normalised[0] = slash
                    length = 1
                }
                let base = length
                var segments = 0
                var index = 0
                while index < body.count {
                    while index < body.count, isSlash(body[index]) { index += 1 }
                    let first = index
                    while index < body.count, !isSlash(body[index]) { index += 1 }
                    guard first < index else { break }
                    let segment = UnsafeBufferPointer(rebasing: body[first..<index])
                    if segment.count == 1 && segment[0] == dot { continue }
                    if isParent(segment) {
                        if !rule.allowTraversal { return .decided("'..' traversal") }
                        guard segments > 0 else { return .decided("path escapes its root") }
                        segments -= 1
                        while length > base, normalised[length - 1] != slash { length -= 1 }
                        if length > base { length -= 1 }  // the separator before the segment taken off
                    } else {
                        if segments > 0 {
                            normalised[length] = slash
                            length += 1
                        }
                        for byte in segment {
                            normalised[length] = byte
                            length += 1
                        }
                        segments += 1
                    }
                }
                guard !rule.allowedPrefixes.isEmpty else { return .decided(nil) }
                return .decided(prefixProblem(UnsafeBufferPointer(rebasing: normalised[0..<length]), rule))
            }
        }
    }

    /// `ArgumentConstraint.prefixProblem` on the normalised bytes, for ASCII prefixes: byte comparison is what String
    /// comparison does on ASCII. A prefix with other characters (compared by canonical equivalence: `K`, KELVIN SIGN,
    /// equals `K`) sends the whole check to the String version.
    private static func prefixProblem(_ normalised: UnsafeBufferPointer<UInt8>, _ rule: ArgumentConstraint.PathRule) -> String? {
        var inside = false
        for prefix in rule.allowedPrefixes {
            guard prefix.utf8.allSatisfy({ $0 < 0x80 }) else {
                return ArgumentConstraint.prefixProblem(String(decoding: normalised, as: UTF8.self), rule)
            }
            if !inside, covers(prefix, normalised) { inside = true }
        }
        return inside ? nil : ArgumentConstraint.outsidePrefixes(rule)
    }

    /// Whether ASCII `prefix` admits `path`, on whole segments: a trailing `/` of the prefix (other than a lone `/`)
    /// is ignored; the path is the prefix, or continues it after a `/`.
    private static func covers(_ prefix: String, _ path: UnsafeBufferPointer<UInt8>) -> Bool {
        var count = prefix.utf8.count
        if count > 1 && prefix.utf8.last == slash { count -= 1 }
        guard path.count >= count, zip(prefix.utf8.prefix(count), path).allSatisfy({ $0 == $1 }) else { return false }
        let endsWithSlash = count > 0 && prefix.utf8[prefix.utf8.index(prefix.utf8.startIndex, offsetBy: count - 1)] == slash
        return path.count == count || endsWithSlash || path[count] == slash
    }

    private static func startsWithFileScheme(_ body: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        for expected in "file:".utf8 {
            guard lower(body[index]) == expected else { return false }
            index += 1
        }
        return true
    }

    /// `PathText.isParent` on bytes: dots only (two or more), or `..` followed by dots and spaces, each also with `;`
    /// parameters after it.
    private static func isParent(_ whole: UnsafeBufferPointer<UInt8>) -> Bool {
        let segment = whole.firstIndex(of: semicolon).map { UnsafeBufferPointer(rebasing: whole[..<$0]) } ?? whole
        if segment.count >= 2 && segment.allSatisfy({ $0 == dot }) { return true }
        var count = segment.count
        while count > 2, segment[count - 1] == space || segment[count - 1] == dot { count -= 1 }
        return count == 2 && segment[0] == dot && segment[1] == dot
    }

    private static func isSlash(_ byte: UInt8) -> Bool { byte == slash || byte == backslash }
    private static func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }
    private static func lower(_ byte: UInt8) -> UInt8 { (0x41...0x5A).contains(byte) ? byte + 0x20 : byte }
}

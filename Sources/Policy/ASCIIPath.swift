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
            let isFileURL = body.count >= 5 && zip(body.prefix(5), "file:".utf8).allSatisfy { lower($0) == $1 }
            let isAbsolute = isRooted || body.first == UInt8(ascii: "~") || isDrive || isFileURL
            if isAbsolute && !rule.allowAbsolute { return .decided("absolute path") }
            var kept: [Range<Int>] = []
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
                    if kept.popLast() == nil { return .decided("path escapes its root") }
                } else {
                    kept.append(first..<index)
                }
            }
            guard !rule.allowedPrefixes.isEmpty else { return .decided(nil) }
            var normalised: [UInt8] = isRooted ? [slash] : []
            normalised.reserveCapacity(body.count + 1)
            for (position, range) in kept.enumerated() {
                if position > 0 { normalised.append(slash) }
                normalised.append(contentsOf: body[range])
            }
            return .decided(ArgumentConstraint.prefixProblem(String(decoding: normalised, as: UTF8.self), rule))
        }
    }

    /// `PathText.isParent` on bytes: dots only (two or more), or `..` followed by dots and spaces.
    private static func isParent(_ segment: UnsafeBufferPointer<UInt8>) -> Bool {
        if segment.count >= 2 && segment.allSatisfy({ $0 == dot }) { return true }
        var count = segment.count
        while count > 2, segment[count - 1] == space || segment[count - 1] == dot { count -= 1 }
        return count == 2 && segment[0] == dot && segment[1] == dot
    }

    private static func isSlash(_ byte: UInt8) -> Bool { byte == slash || byte == backslash }
    private static func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }
    private static func lower(_ byte: UInt8) -> UInt8 { (0x41...0x5A).contains(byte) ? byte + 0x20 : byte }
}

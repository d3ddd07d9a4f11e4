/// Resource URIs as a server resolves them, for matching `resources` patterns: the scheme and authority lower-cased,
/// the path percent-decoded (to a fixed point, at most 4 rounds), backslashes folded to `/`, and dot segments removed
/// (RFC 3986 §5.2.4). So `file:///workspace/../../etc/passwd` and its `%2e%2e` form become `file:///etc/passwd`,
/// which a `file:///workspace/*` pattern does not match.
enum ResourceURI {
    /// The canonical form of `uri`, or nil when it cannot be read (control characters or invalid UTF-8 once decoded,
    /// or still percent-encoded after the decoding bound): such a call is refused.
    static func canonical(_ uri: String) -> String? {
        let scalars = Array(uri.unicodeScalars)
        guard let colon = scalars.firstIndex(of: ":"), colon > 0,
            scalars[..<colon].allSatisfy({
                $0.properties.isASCIIHexDigit || $0.properties.isAlphabetic || "+-.".unicodeScalars.contains($0)
            })
        else {
            return nil
        }
        let scheme = String(String.UnicodeScalarView(scalars[..<colon])).lowercased()
        var rest = String(String.UnicodeScalarView(scalars[(colon + 1)...]))
        var authority = ""
        if rest.hasPrefix("//") {
            let afterSlashes = rest.dropFirst(2)
            let end = afterSlashes.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? afterSlashes.endIndex
            authority = "//" + afterSlashes[..<end].lowercased()
            rest = String(afterSlashes[end...])
        }
        let queryStart = rest.firstIndex { $0 == "?" || $0 == "#" } ?? rest.endIndex
        var path = String(rest[..<queryStart])
        let suffix = String(rest[queryStart...])
        for _ in 0..<4 {
            let decoded = ArgumentCanonicalizer.percentDecoded(path)
            if decoded == path { break }
            path = decoded
        }
        guard !path.utf8.contains(UInt8(ascii: "%")) || ArgumentCanonicalizer.percentDecoded(path) == path else { return nil }
        guard !path.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{FFFD}" }) else { return nil }
        path = String(String.UnicodeScalarView(path.unicodeScalars.map { $0 == "\\" ? "/" : $0 }))
        return scheme + ":" + authority + removeDotSegments(path) + suffix
    }

    /// RFC 3986 §5.2.4, on whole segments: `.` disappears, `..` removes the segment before it (never above the root).
    static func removeDotSegments(_ path: String) -> String {
        guard path.contains(".") else { return path }
        let absolute = path.hasPrefix("/")
        var output: [Substring] = []
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for (index, segment) in segments.enumerated() {
            if segment == "." {
                if index == segments.count - 1 { output.append("") }
            } else if segment == ".." {
                if !output.isEmpty && !(output.count == 1 && output[0].isEmpty && absolute) { output.removeLast() }
                if index == segments.count - 1 { output.append("") }
            } else {
                output.append(segment)
            }
        }
        var joined = output.joined(separator: "/")
        if absolute && !joined.hasPrefix("/") { joined = "/" + joined }
        return joined
    }
}

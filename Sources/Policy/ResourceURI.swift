import Foundation

/// Resource URIs as a server resolves them, for matching `resources` patterns: the scheme and authority lower-cased,
/// the path percent-decoded once, and dot segments removed (RFC 3986 §5.2.4). So `file:///workspace/../../etc/passwd`
/// and its `%2e%2e` form become `file:///etc/passwd`, which a `file:///workspace/*` pattern does not match.
///
/// Servers disagree on the rest, and each disagreement is a way out of a pattern's base, so a URI whose path depends
/// on it cannot be read and is refused: a backslash (a separator on Windows, a name on POSIX); an encoded `/` or `\`
/// (`%2f`, `%5c`: decoded before or after the path is split); an encoded `?` or `#` (`%3f`, `%23`) right after a dot
/// segment (a server that decodes before it parses ends the path there: `/workspace/..%3F` is `/workspace/..` to it;
/// elsewhere, as in `a%23b.txt`, it is a name's character either way); encoding nested twice (`%252e`: decoded once or twice);
/// an empty segment (`//..` climbs from the root on POSIX, and is dropped by dot-segment removal); a segment that some
/// server reads as `..` but RFC 3986 does not (`..;x`, `...`, `.. `); slash and dot look-alikes and characters that
/// NFKC turns into `.`, `/` or `%` (`．．`, `‥`); control characters and invalid UTF-8.
enum ResourceURI {
    /// The canonical form of `uri`, or nil when it cannot be read unambiguously: such a call is refused.
    static func canonical(_ uri: String) -> String? {
        let scalars = Array(uri.unicodeScalars)
        guard let colon = scalars.firstIndex(of: ":"), colon > 0,
            scalars[..<colon].allSatisfy({
                $0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil || "+-.".unicodeScalars.contains($0))
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
        let rawPath = String(rest[..<queryStart])
        let suffix = String(rest[queryStart...])
        guard !rawPath.contains("\\"), !containsEncodedDelimiter(rawPath) else { return nil }
        let (path, valid, _) = ArgumentCanonicalizer.percentDecodedValidating(rawPath)
        guard valid, ArgumentCanonicalizer.percentDecoded(path) == path else { return nil }  // nested encodings
        guard isUnambiguous(path) else { return nil }
        // A file has no query or fragment; a server that strips the scheme and resolves the rest would read dot
        // segments in them. For other schemes, dot segments after `?` or `#` are refused for the same reason.
        if scheme == "file" && !suffix.isEmpty { return nil }
        if suffix.contains("/..") || suffix.contains("../") || suffix.contains("\\") || suffix.lowercased().contains("%2e") { return nil }
        return scheme + ":" + authority + removeDotSegments(path) + suffix
    }

    /// Whether `%2f` or `%5c` (any case) occurs, or `%3f` or `%23` right after a dot segment (`/..%3F`, `/.%23`).
    private static func containsEncodedDelimiter(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count >= 3 else { return false }
        for index in 0..<(bytes.count - 2) where bytes[index] == UInt8(ascii: "%") {
            let high = bytes[index + 1], low = bytes[index + 2] | 0x20
            switch (high, low) {
            case (UInt8(ascii: "2"), UInt8(ascii: "f")), (UInt8(ascii: "5"), UInt8(ascii: "c")):
                return true
            case (UInt8(ascii: "3"), UInt8(ascii: "f")), (UInt8(ascii: "2"), UInt8(ascii: "3")):
                // What the segment holds before it, decoded: a dot segment there is where a decode-then-parse server
                // would end the path.
                // Only a segment start of at most six bytes can decode to `.` or `..` (`%2e%2e`): looked at only then,
                // so the scan stays linear however many delimiters a segment holds.
                let start = (max(0, index - 7)..<index).last { bytes[$0] == UInt8(ascii: "/") }.map { $0 + 1 } ?? (index <= 6 ? 0 : -1)
                guard start >= 0 else { continue }
                let before = ArgumentCanonicalizer.percentDecoded(String(decoding: bytes[start..<index], as: UTF8.self))
                if before == "." || before == ".." { return true }
            default:
                continue
            }
        }
        return false
    }

    /// Whether every server reads the decoded `path` the same way (see the type's description).
    private static func isUnambiguous(_ path: String) -> Bool {
        for scalar in path.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value) || scalar == "\u{FFFD}"
                || scalar == "\\"
            {
                return false
            }
            if !scalar.isASCII {
                if PathText.fold(scalar) != scalar { return false }
                let compatible = String(scalar).precomposedStringWithCompatibilityMapping
                if compatible.contains(where: { $0 == "." || $0 == "/" || $0 == "\\" || $0 == "%" }) { return false }
            }
        }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for (index, segment) in segments.enumerated() {
            // An empty segment is only allowed as the root's (and after a final slash).
            if segment.isEmpty && index != 0 && index != segments.count - 1 { return false }
            if segment == "." || segment == ".." { continue }
            let beforeParameters = segment.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            if beforeParameters == "." || beforeParameters == ".." { return false }
            if PathText.isParent(Array(segment.unicodeScalars)) { return false }
        }
        return true
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

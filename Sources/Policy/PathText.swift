/// A path argument as a file system will read it, worked out on Unicode scalars — never on Swift `Character`s, which
/// glue a combining mark or a format character onto a `/` or `.` and so hide it from comparisons.
///
/// Steps: control characters (C0, DEL, C1) and NUL are refused; slash, backslash and dot look-alikes become `/` and
/// `.`; combining marks and format characters (zero-width spaces, joiners, bidi controls, BOM) next to a separator
/// or a dot are refused (dropping them would turn `docś/` into `docs/` for prefix checks); the path is split into
/// segments on `/`. Absolute forms are recognised after leading
/// whitespace: `/`, `~`, a drive letter (`C:`), a UNC or scheme-relative `//`, and `file:`.
struct PathText {
    /// Why the text cannot be a path at all (a control character), if so.
    let refusal: String?
    /// The segments between separators (empty segments dropped), each as scalars.
    let segments: [[Unicode.Scalar]]
    /// Whether the path is absolute in any of the recognised forms.
    let isAbsolute: Bool
    /// Whether the path starts at the file system root (`/…`), so prefixes compare with a leading `/`.
    let isRooted: Bool

    init(_ text: String) {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(text.unicodeScalars.count)
        var refusal: String?
        for scalar in text.unicodeScalars {
            let value = scalar.value
            if value == 0 {
                refusal = refusal ?? "path contains a NUL byte"
                continue
            }
            if value < 0x20 || value == 0x7F || (0x80...0x9F).contains(value) {
                refusal = refusal ?? "path contains a control character (U+\(String(value, radix: 16, uppercase: true)))"
                continue
            }
            scalars.append(Self.fold(scalar))
        }
        // Marks and format characters that touch a separator or a dot would hide it from a comparison on characters
        // and mean something else to every reader: refused.
        if let touching = Self.invisibleTouchingSeparator(scalars) {
            refusal =
                refusal
                ?? "path has a combining or format character next to a separator or dot (U+\(String(touching.value, radix: 16, uppercase: true)))"
        }
        // Marks and format characters elsewhere stay in their segment: `da` + U+200B + `ta` is not `data` to a file
        // system, so it must not be to a prefix check.
        // Leading whitespace does not stop a path from being absolute.
        let start = scalars.firstIndex { !$0.properties.isWhitespace } ?? scalars.endIndex
        let body = Array(scalars[start...])
        let lowered = String(String.UnicodeScalarView(body.prefix(5))).lowercased()
        let isDrive = body.count >= 2 && body[1] == ":" && body[0].properties.isAlphabetic
        isRooted = body.first == "/"
        isAbsolute = isRooted || body.first == "~" || isDrive || lowered.hasPrefix("file:")
        segments = body.split(separator: "/", omittingEmptySubsequences: true).map(Array.init)
        self.refusal = refusal
    }

    /// Whether `segment` climbs a level: `..`, or dots only (`....`, which Windows trims to nothing), or `..` with
    /// trailing dots or spaces (trimmed by Windows), each also with `;` parameters after it (`..;x`, which Java
    /// servers such as Tomcat read as `..` when a tool puts the path into a URL).
    static func isParent(_ segment: [Unicode.Scalar]) -> Bool {
        let segment = segment.firstIndex(of: ";").map { segment[..<$0] } ?? segment[...]
        var trimmed = segment
        let dotsOnly = segment.count >= 2 && segment.allSatisfy { $0 == "." }
        if dotsOnly { return true }
        while let last = trimmed.last, last == " " || last == ".", trimmed.count > 2 { trimmed = trimmed.dropLast() }
        return trimmed.elementsEqual([".", "."])
    }

    /// Whether `segment` is `.`.
    static func isCurrent(_ segment: [Unicode.Scalar]) -> Bool { segment == ["."] }

    /// Slash, backslash and dot look-alikes → `/` and `.`.
    static func fold(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        switch scalar.value {
        case 0x5C,  // backslash
            0x2215, 0x2044, 0x29F8, 0x2571, 0x27CB, 0x1735, 0xFF0F, 0x2F, 0x3033,  // slashes
            0x2216, 0x29F9, 0x29F5, 0xFE68, 0xFF3C, 0x2572, 0x27CD:  // backslashes
            return "/"
        case 0x2024, 0xFE52, 0xFF0E, 0x3002, 0xFF61, 0x0701, 0x0702, 0xA4F8, 0x2E31, 0x00B7:  // dots
            return "."
        default:
            return scalar
        }
    }

    /// The first mark or format character whose nearest visible neighbour on either side is a separator or a dot, or
    /// that has none on a side (it touches the start or the end). Two passes, each scalar classified once: looking
    /// for the neighbours from each invisible scalar made a run of them quadratic (found in this session: 40,000
    /// zero-width spaces in one segment, 120 KB, took 135 s to decide, on the event loop for a call under 64 KiB).
    static func invisibleTouchingSeparator(_ scalars: [Unicode.Scalar]) -> Unicode.Scalar? {
        // Most paths have none: nothing is allocated for them.
        guard scalars.contains(where: isInvisible) else { return nil }
        let invisible = scalars.map(isInvisible)
        // Whether the nearest visible scalar after each index is a separator or a dot (or there is none).
        var touchesAfter = [Bool](repeating: true, count: scalars.count)
        var next = true
        for index in scalars.indices.reversed() {
            touchesAfter[index] = next
            if !invisible[index] { next = isSeparatorOrDot(scalars[index]) }
        }
        var previous = true
        for index in scalars.indices {
            if !invisible[index] {
                previous = isSeparatorOrDot(scalars[index])
            } else if previous || touchesAfter[index] {
                return scalars[index]
            }
        }
        return nil
    }

    static func isInvisible(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .format: return true
        default: return scalar.value == 0x034F  // combining grapheme joiner
        }
    }

    static func isSeparatorOrDot(_ scalar: Unicode.Scalar) -> Bool { scalar == "/" || scalar == "." }
}

/// Rules about one argument (or, with key `*`, every argument) of a call.
///
/// Every check yields a violation or nothing. Deny-type checks (substrings, deny patterns, detectors) look at
/// every form of a value (raw, each decoding step, canonical); allow-type checks (allow patterns, path prefixes)
/// look at the canonical form only, so neither an encoding nor a look-alike helps a value past them.
public struct ArgumentConstraint: Sendable, Hashable {
    /// Path rules for values that name files.
    public struct PathRule: Sendable, Hashable {
        /// Allowed canonical prefixes, compared on whole segments (`/data` admits `/data/x`, not `/database`).
        public var allowedPrefixes: [String]
        /// Whether absolute paths (`/x`, `C:/x`, `~/x`, `//host/x`) are allowed.
        public var allowAbsolute: Bool
        /// Whether `..` segments are allowed.
        public var allowTraversal: Bool
    }

    /// The argument key this applies to (folded), or `*` for every argument.
    public let key: String
    /// Case-insensitive texts that must not occur as a token (the classic `arg_deny`): an occurrence counts when
    /// it is not glued to a letter, digit, `.`, `_` or `-` on either side, so `..` catches `../x` and `a/..` but
    /// not `notes..txt`.
    public var denyTokens: [String] = []
    /// Patterns that must not match.
    public var denyPatterns: [LinearRegex] = []
    /// When non-empty, the canonical value must match one of these.
    public var allowPatterns: [LinearRegex] = []
    /// Path rules, if the value is a path.
    public var path: PathRule?
    /// Longest canonical value allowed, in Unicode scalars.
    public var maximumLength: Int?
    /// Shortest canonical value allowed, in Unicode scalars.
    public var minimumLength: Int?
    /// Longest canonical value allowed, in UTF-8 bytes.
    public var maximumBytes: Int?
    /// The value must be exactly one read-only SQL query (see `SQLScanner.readOnlyProblem`).
    public var readOnlySQL = false
    /// The databases whose reading of SQL `readOnlySQL` and the `sql_injection` detector apply (every one the checks
    /// know, unless the policy names the tool's own): a text must pass as each of them reads it.
    public var sqlDialects: [SQLDialect] = SQLDialect.allCases
    /// Required JSON type (`string`, `number`, `boolean`, `array`, `object`, `null`) of the argument itself.
    public var type: String?
    /// Detectors that must not fire.
    public var detectors: [Detector] = []
    /// Whether the argument must be present.
    public var required = false

    /// A constraint for `key` with no checks yet.
    public init(key: String) { self.key = key }

    /// Whether a leaf falls under this constraint: `*` covers everything; a key covers the leaves below any
    /// object key that folds to it (at any depth) — not the key itself.
    func covers(_ value: ArgumentValue) -> Bool {
        key == "*" || value.keys.contains(key)
    }

    /// Whether `violations` reads the top-level argument types (a named argument that is required or typed): they
    /// are worked out only for rules with such a constraint.
    var checksTopLevel: Bool { key != "*" && (required || type != nil) }

    /// Every violation of this constraint by the call's leaves; `topLevel` is read only when `checksTopLevel`.
    func violations(in leaves: [ArgumentValue], topLevel: [String: [String]], searchSteps: inout Int) -> [ArgumentFinding] {
        var findings: [ArgumentFinding] = []
        if checksTopLevel {
            if required && topLevel[key] == nil {
                findings.append(ArgumentFinding(location: key, value: "", problem: "required argument is missing"))
            }
            if let type, let actual = topLevel[key]?.first(where: { $0 != type }) {
                findings.append(ArgumentFinding(location: key, value: "", problem: "must be a \(type), not a \(actual)"))
            }
        }
        // By index: a `for` over the leaves copies each one (a retain and a release of each of its strings and arrays).
        for index in leaves.indices where covers(leaves[index]) || (key == "*" && leaves[index].type == "key") {
            if let problem = problem(with: leaves[index], searchSteps: &searchSteps) {
                findings.append(ArgumentFinding(location: leaves[index].location, value: leaves[index].canonical, problem: problem))
            }
        }
        return findings
    }

    private func problem(with leaf: ArgumentValue, searchSteps: inout Int) -> String? {
        if let problem = leaf.encodingProblem { return problem }
        // The cheap checks first: a value too long is refused before any detector or pattern reads it.
        if leaf.type != "key" {
            // Lengths count Unicode scalars: a "character" can carry any number of combining marks. The upper bounds
            // hold for every form, the value as sent included (20 characters percent-encoded seven times are 43 KB
            // for the tool); the lower one for the canonical value.
            // Plain loops: a key path in a lazy map is projected through the runtime (this runs for every leaf of
            // every call a constraint covers). A form of at most `maximumLength` bytes has at most as many scalars.
            let forms = maximumLength != nil || maximumBytes != nil ? leaf.forms : []
            if let maximumLength {
                for form in forms where form.utf8.count > maximumLength {
                    let length = form.unicodeScalars.count
                    if length > maximumLength { return "longer than \(maximumLength) characters (\(length) Unicode scalars)" }
                }
            }
            if let minimumLength, case let length = leaf.canonical.unicodeScalars.count, length < minimumLength {
                return "shorter than \(minimumLength) characters (\(length) Unicode scalars)"
            }
            if let maximumBytes {
                for form in forms where form.utf8.count > maximumBytes { return "longer than \(maximumBytes) bytes (\(form.utf8.count))" }
            }
        }
        if !denyTokens.isEmpty || !denyPatterns.isEmpty {
            for form in leaf.forms {
                if !denyTokens.isEmpty {
                    let lowered = form.lowercased()
                    if let hit = denyTokens.first(where: { Self.containsToken(lowered, $0) }) { return "contains '\(hit)'" }
                }
                for pattern in denyPatterns {
                    switch pattern.search(form, steps: &searchSteps) {
                    case .matched: return "matches denied pattern /\(pattern.pattern)/"
                    case .tooCostly: return "too long to search for denied pattern /\(pattern.pattern)/ (refused unexamined)"
                    case .notMatched: continue
                    }
                }
            }
        }
        for detector in detectors {
            if let found = detector.finding(in: leaf, databases: sqlDialects) { return "\(detector.rawValue): \(found)" }
        }
        guard leaf.type != "key" else { return nil }
        let canonical = leaf.canonical
        // Every form: the database gets the value as sent, and a tool may decode it first (`%27` is a quote to one,
        // and `%` an operator to the other).
        if readOnlySQL {
            for form in leaf.forms {
                if let problem = SQLScanner.readOnlyProblem(form, databases: sqlDialects) {
                    return "not a read-only query: \(problem)"
                        + (form.hasSameBytes(as: canonical) ? "" : " (in the form \(Self.quoted(form)))")
                }
            }
        }
        // The value as sent must be allowed too when it holds what canonicalisation folds away (a backslash, a
        // percent-escape): the tool receives that one.
        for form in allowPatterns.isEmpty ? .none : leaf.checkedForms {
            var costly: LinearRegex?
            var allowed = false
            for pattern in allowPatterns {
                switch pattern.search(form, steps: &searchSteps) {
                case .matched: allowed = true
                case .tooCostly: costly = pattern
                case .notMatched: break
                }
                if allowed { break }
            }
            if !allowed, let costly { return "too long to search for allowed pattern /\(costly.pattern)/ (refused unexamined)" }
            if !allowed {
                return form.hasSameBytes(as: canonical)
                    ? "matches none of the allowed patterns" : "matches none of the allowed patterns as sent (before canonicalisation)"
            }
        }
        if let path {
            if path.allowTraversal, let problem = Self.ambiguousTraversal(raw: leaf.raw, canonical: canonical) { return problem }
            if let problem = Self.pathProblem(canonical, path) { return problem }
            // Prefixes hold for every form: `/srv/datª/x` is `/srv/data/x` once normalised, but the tool opens a sibling
            // of `/srv/data`.
            guard !path.allowedPrefixes.isEmpty else { return nil }
            // The forms canonically equivalent to the canonical one (`==` on strings: decomposed text, as macOS writes
            // file names, whose combining marks sit next to dots) are held to the prefixes byte for byte only: to a POSIX
            // file system `cafe` + U+0301 or a Kelvin sign is another name (found by review).
            for form in leaf.forms where !form.hasSameBytes(as: canonical) {
                let problem = form == canonical ? Self.literalPrefixProblem(form, path) : Self.pathProblem(form, path)
                if let problem { return "\(problem) in the form \(Self.quoted(form))" }
            }
        }
        return nil
    }

    /// `text` in quotes for a reason, cut to 80 characters.
    private static func quoted(_ text: String) -> String {
        "'" + (text.unicodeScalars.count > 80 ? String(String.UnicodeScalarView(text.unicodeScalars.prefix(80))) + "…" : text) + "'"
    }

    /// Why a path with a `..` segment cannot be resolved the way every reader resolves it, when traversal is allowed;
    /// nil when it can. The canonical form turns backslashes, percent-encoded characters and look-alikes into `/` and
    /// `.`, which is safe for refusing (`..` anywhere is found) but not for counting: a reader for which
    /// `data/a\b\c/../../../etc` has two segments before its three `..` lands outside `data`, where the canonical
    /// form stays inside. So a `..` is only counted in a path whose every separator and dot is an ASCII `/` or `.`
    /// as sent.
    static func ambiguousTraversal(raw: String, canonical: String) -> String? {
        let parents = PathText(canonical).segments.filter(PathText.isParent)
        guard !parents.isEmpty else { return nil }
        guard raw == canonical, !canonical.unicodeScalars.contains(where: { PathText.fold($0) != $0 }) else {
            return "'..' in a path with an encoded, backslash or look-alike separator or dot (readers disagree where it leads)"
        }
        if parents.contains(where: { $0.contains(";") }) {
            return "'..;' in a path (a Java server reads it as '..', a file system as a name: readers disagree where it leads)"
        }
        return nil
    }

    /// Whether `token` occurs in `text` with no letter, digit, `.`, `_` or `-` directly before or after it.
    static func containsToken(_ text: String, _ token: String) -> Bool {
        let haystack = Array(text.unicodeScalars), needle = Array(token.unicodeScalars)
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        func glues(_ scalar: Unicode.Scalar) -> Bool {
            scalar.properties.isAlphabetic || scalar.properties.numericType != nil || scalar == "." || scalar == "_" || scalar == "-"
        }
        for start in 0...(haystack.count - needle.count) where haystack[start..<start + needle.count].elementsEqual(needle) {
            let end = start + needle.count
            if (start == 0 || !glues(haystack[start - 1])) && (end == haystack.count || !glues(haystack[end])) { return true }
        }
        return false
    }

    static func pathProblem(_ canonical: String, _ rule: PathRule) -> String? {
        let problem: String?
        if case .decided(let decided) = ASCIIPath.problem(canonical, rule) {
            problem = decided
        } else {
            problem = scalarPathProblem(canonical, rule)
        }
        guard problem == nil, !rule.allowedPrefixes.isEmpty else { return problem }
        // Printable ASCII without a backslash or a leading blank, where no `..` is allowed, reads the same both ways
        // (ASCII has no look-alikes, and every segment of dots was refused above): the common case skips the second
        // reading, which costs allocations on every call.
        if !rule.allowTraversal, canonical.utf8.first != UInt8(ascii: " "),
            canonical.utf8.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E && $0 != UInt8(ascii: "\\") })
        {
            return nil
        }
        return literalPrefixProblem(canonical, rule)
    }

    /// The prefix check as a POSIX file system reads `text`: only a plain `/` separates, nothing is trimmed or mapped.
    /// The steps above read a backslash or a look-alike as a separator and skip leading blanks, as a Windows reader
    /// does; a POSIX one opens `data\secret` or ` data/secret` as a sibling of `data` (found by review). A value must lie
    /// under a prefix both ways. (Its `..` segments, if it may have any, are plain as sent: `ambiguousTraversal`.)
    static func literalPrefixProblem(_ text: String, _ rule: PathRule) -> String? {
        var segments: [Substring.UTF8View] = []
        for segment in text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if segment.elementsEqual(".".utf8) { continue }
            if segment.elementsEqual("..".utf8) {
                if segments.popLast() == nil { return "path escapes its root" }
                continue
            }
            segments.append(segment)
        }
        var literal: [UInt8] = text.utf8.first == UInt8(ascii: "/") ? [UInt8(ascii: "/")] : []
        for (index, segment) in segments.enumerated() {
            if index > 0 { literal.append(UInt8(ascii: "/")) }
            literal += segment
        }
        // Byte for byte: `==` and `hasPrefix` on strings would take a Kelvin sign for a `K`.
        let inside = rule.allowedPrefixes.contains { prefix in
            var trimmed = Array(prefix.utf8)
            if trimmed.count > 1, trimmed.last == UInt8(ascii: "/") { trimmed.removeLast() }
            if literal == trimmed { return true }
            if trimmed.last != UInt8(ascii: "/") { trimmed.append(UInt8(ascii: "/")) }
            return literal.starts(with: trimmed)
        }
        guard !inside else { return nil }
        return outsidePrefixes(rule)
            + " as a POSIX file system reads it (a backslash, look-alike or encoded separator, or a leading blank, makes a sibling)"
    }

    /// `pathProblem` worked out on Unicode scalars (`PathText`): the general way, for any text.
    static func scalarPathProblem(_ canonical: String, _ rule: PathRule) -> String? {
        let path = PathText(canonical)
        if let refusal = path.refusal { return refusal }
        if path.isAbsolute && !rule.allowAbsolute { return "absolute path" }
        var segments: [String] = []
        for segment in path.segments where !PathText.isCurrent(segment) {
            if PathText.isParent(segment) {
                if !rule.allowTraversal { return "'..' traversal" }
                if segments.popLast() == nil { return "path escapes its root" }
            } else {
                segments.append(String(String.UnicodeScalarView(segment)))
            }
        }
        guard !rule.allowedPrefixes.isEmpty else { return nil }
        return prefixProblem((path.isRooted ? "/" : "") + segments.joined(separator: "/"), rule)
    }

    /// Whether the normalised path `normalised` lies under one of the rule's allowed prefixes (which must not be empty).
    static func prefixProblem(_ normalised: String, _ rule: PathRule) -> String? {
        let inside = rule.allowedPrefixes.contains { prefix in
            let trimmed = prefix.hasSuffix("/") && prefix.count > 1 ? String(prefix.dropLast()) : prefix
            return normalised == trimmed || normalised.hasPrefix(trimmed.hasSuffix("/") ? trimmed : trimmed + "/")
        }
        return inside ? nil : outsidePrefixes(rule)
    }

    /// The problem of a path outside every allowed prefix.
    static func outsidePrefixes(_ rule: PathRule) -> String { "outside the allowed prefixes \(rule.allowedPrefixes)" }
}

/// An argument value that made a rule decide, with the canonical form that was matched.
public struct ArgumentFinding: Sendable, Hashable {
    /// Where the value is (`opts.path`).
    public let location: String
    /// Its canonical form (shortened to 200 characters).
    public let value: String
    /// What is wrong with it.
    public let problem: String

    init(location: String, value: String, problem: String) {
        self.location = location
        self.value = value.count > 200 ? String(value.prefix(200)) + "…" : value
        self.problem = problem
    }
}

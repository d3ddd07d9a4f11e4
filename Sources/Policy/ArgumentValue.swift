import Foundation
public import StrictJSON

/// One leaf of a call's arguments, in every form the policy matches against.
public struct ArgumentValue: Sendable, Hashable {
    /// Where it is: `path`, `opts.path`, `files[2]`.
    public let location: String
    /// The object keys above it, folded (NFKC, lower-case), so that `PATH`, `Path` and `ＰＡＴＨ` are one key.
    public let keys: [String]
    /// JSON type of the leaf: `string`, `number`, `boolean`, `null`, or `key` for an object key itself.
    public let type: String
    /// The value as received (a string's content, or a number's literal).
    public let raw: String
    /// Every intermediate form (raw, each percent-decoding, each NFKC round, slash-folded), without duplicates.
    public let forms: [String]
    /// The final canonical form: fully percent-decoded, NFKC-normalised, backslashes folded to `/`.
    public var canonical: String { forms.last ?? raw }
    /// The forms allow patterns check: the canonical one, and the value as sent when it holds a `%` or a backslash
    /// (which canonicalisation folds away, but the tool receives). A value that differs only by Unicode normalisation
    /// (decomposed text, as macOS writes file names) is matched as canonical only. (Length bounds hold for every form.)
    public var checkedForms: CheckedForms {
        guard raw.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "\\") }), raw != canonical else {
            return CheckedForms(canonical)
        }
        return CheckedForms(raw, canonical)
    }
    /// Why the value cannot be read unambiguously (percent-encoding nested past the bound, or decoding to invalid
    /// UTF-8 such as the overlong `%c0%af`); any constraint refuses such a value.
    public let encodingProblem: String?
    /// Whether the leaf was found inside a string argument that holds JSON (rules with `nested_json: false` skip it).
    public let isInsideJSONString: Bool

    /// The value with its forms computed.
    init(location: String, keys: [String], type: String, raw: String, isInsideJSONString: Bool = false) {
        var unlimited = Int.max
        self.init(
            location: location, keys: keys, type: type, raw: raw, isInsideJSONString: isInsideJSONString, budget: &unlimited)!
    }

    /// The value with its forms computed within `budget` bytes of canonicalisation work (nil beyond it).
    init?(location: String, keys: [String], type: String, raw: String, isInsideJSONString: Bool, budget: inout Int) {
        self.location = location
        self.keys = keys
        self.type = type
        self.raw = raw
        self.isInsideJSONString = isInsideJSONString
        guard let canonicalised = ArgumentCanonicalizer.canonicalise(raw, budget: &budget) else { return nil }
        self.forms = canonicalised.forms
        self.encodingProblem = canonicalised.problem
    }
}

/// The one or two forms of a leaf that allow patterns and length bounds check (`ArgumentValue.checkedForms`), in
/// order, without an array to allocate: this runs for every leaf a constraint covers.
public struct CheckedForms: Sequence, Sendable {
    private let first: String?
    private let second: String?

    /// No form (for a constraint that checks none).
    public static let none = CheckedForms(first: nil, second: nil)

    private init(first: String?, second: String?) {
        self.first = first
        self.second = second
    }

    /// One form.
    init(_ only: String) { self.init(first: only, second: nil) }

    /// Two forms, in this order.
    init(_ first: String, _ second: String) { self.init(first: first, second: second) }

    /// Yields the forms in order.
    public struct Iterator: IteratorProtocol {
        fileprivate var first: String?
        fileprivate var second: String?

        public mutating func next() -> String? {
            let next = first
            (first, second) = (second, nil)
            return next
        }
    }

    public func makeIterator() -> Iterator { Iterator(first: first, second: second) }
}

/// Turns a call's arguments into canonical leaves, so that encodings, Unicode look-alikes, key spellings and
/// nesting cannot hide a value from the rules.
public enum ArgumentCanonicalizer {
    /// At most this many percent-decoding/NFKC rounds (`%25252e` needs three).
    static let maximumRounds = 8
    /// Leaves beyond this many are not examined; the call is refused instead (see `TenantPolicySet`).
    public static let maximumLeaves = 10_000
    /// Leaves found inside JSON held by string arguments (a JSON document passed as a string), counted apart: beyond
    /// this many the call is refused as well.
    public static let maximumNestedLeaves = 50_000

    /// Bytes of canonicalisation work (every form of every leaf, nested JSON included) one call may cost; beyond it the
    /// call is refused with that reason. A plain 4 MiB argument costs 4 MiB; encodings nested round after round cost
    /// each round.
    public static let canonicalisationBudget = 16 * 1024 * 1024

    /// Why a call's arguments were not examined.
    public enum Refusal: Error, Sendable, Hashable {
        /// More than `maximumLeaves` values.
        case tooManyValues
        /// Canonicalising them would cost more than `canonicalisationBudget`.
        case overBudget
        /// A string argument holds JSON nested deeper than `maximumNestedJSONDepth` (at this location).
        case nestedJSONTooDeep(String)
        /// More than `maximumNestedLeaves` values inside JSON held by string arguments.
        case tooManyNestedValues
        /// A string argument holds JSON with a string that is not stream-safe (at this location).
        case nestedJSONNotStreamSafe(String)

        /// In words, for the decision's reason.
        public var reason: String {
            switch self {
            case .tooManyValues: "arguments have more than \(ArgumentCanonicalizer.maximumLeaves) values; refused unexamined"
            case .overBudget:
                "canonicalising the arguments would take more than \(ArgumentCanonicalizer.canonicalisationBudget) bytes of work; refused unexamined"
            case .tooManyNestedValues:
                "JSON held by string arguments has more than \(ArgumentCanonicalizer.maximumNestedLeaves) values; refused unexamined"
            case .nestedJSONNotStreamSafe(let location):
                "the string argument \(location.prefix(200)) holds JSON with more than 30 combining marks in a row in a string, which a server would decode but the gateway does not; refused unexamined"
            case .nestedJSONTooDeep(let location):
                "the string argument \(location.prefix(200)) holds JSON nested deeper than \(ArgumentCanonicalizer.maximumNestedJSONDepth) levels, which a server would decode but the gateway cannot check; refused unexamined"
            }
        }
    }

    /// All leaves of `arguments`, nested objects and arrays walked; object keys are leaves too (type `key`).
    /// Nil when there are more than `maximumLeaves` or the work exceeds the budget.
    public static func leaves(of arguments: JSONValue?) -> [ArgumentValue]? {
        try? examine(arguments).get()
    }

    /// All leaves of `arguments`, or why they were not examined.
    public static func examine(_ arguments: JSONValue?) -> Result<[ArgumentValue], Refusal> {
        walkLeaves(of: arguments)
    }

    private static func walkLeaves(of arguments: JSONValue?) -> Result<[ArgumentValue], Refusal> {
        var result: [ArgumentValue] = []
        // Room for a few leaves at once (a call's arguments are mostly a handful of keys and values): the array is not
        // grown leaf by leaf.
        if arguments != nil { result.reserveCapacity(8) }
        var failure: Refusal?
        var budget = canonicalisationBudget
        var topLevelLeaves = 0
        var nestedLeaves = 0
        func add(_ location: String, _ keys: [String], _ type: String, _ raw: String, _ nested: Bool) {
            guard failure == nil else { return }
            // Leaves of the arguments themselves, and leaves inside JSON held by their strings, are counted apart.
            if nested {
                nestedLeaves += 1
                if nestedLeaves > maximumNestedLeaves {
                    failure = .tooManyNestedValues
                    return
                }
            } else {
                topLevelLeaves += 1
                if topLevelLeaves > maximumLeaves {
                    failure = .tooManyValues
                    return
                }
            }
            if let value = ArgumentValue(
                location: location, keys: keys, type: type, raw: raw, isInsideJSONString: nested, budget: &budget)
            {
                result.append(value)
            } else {
                failure = .overBudget
            }
        }
        func walk(_ value: JSONValue, location: String, keys: [String], nested: Bool) {
            guard failure == nil else { return }
            switch value {
            case .object(let object):
                for member in object.members {
                    let folded = foldKey(member.key)
                    let here = located(location, location.isEmpty ? "" : ".", member.key)
                    add(here, keys, "key", member.key, nested)
                    var inner = keys
                    inner.append(folded)
                    walk(member.value, location: here, keys: inner, nested: nested)
                }
            case .array(let elements):
                for (position, element) in elements.enumerated() {
                    walk(element, location: located(location, "[", "\(position)]"), keys: keys, nested: nested)
                }
            case .string(let text):
                add(location, keys, "string", text, nested)
                // A string that holds JSON is also checked as the structure a server will decode from it (the
                // official Python SDK json-decodes strings given to list, dict and model parameters), read as leniently
                // as Python reads it. Its parse is paid from the same budget as canonicalisation.
                guard looksLikeJSON(text) else { return }
                budget -= text.utf8.count
                if budget < 0 {
                    failure = .overBudget
                    return
                }
                switch nestedJSON(text) {
                case .value(let inner): walk(inner, location: located(location, "", "<json>"), keys: keys, nested: true)
                case .tooDeep: failure = .nestedJSONTooDeep(location.isEmpty ? "(top level)" : location)
                case .notStreamSafe: failure = .nestedJSONNotStreamSafe(location.isEmpty ? "(top level)" : location)
                case .notJSON: break
                }
            case .number(let number):
                add(location, keys, "number", number.literal, nested)
            case .bool(let flag):
                add(location, keys, "boolean", flag ? "true" : "false", nested)
            case .null:
                add(location, keys, "null", "null", nested)
            }
        }
        if let arguments { walk(arguments, location: "", keys: [], nested: false) }
        if let failure { return .failure(failure) }
        return .success(result)
    }

    /// Most UTF-8 bytes of a leaf's location, which only names it in reasons and findings (rules match on `keys`).
    public static let maximumLocationBytes = 512

    /// `location` followed by `separator` and `part`, cut to `maximumLocationBytes` (ending in `…`); a location at
    /// its bound is kept as it is, and one cut shorter may still take a short part after its `…`. Found by review: every leaf held its whole path, so a 4 MB key over 10,000 array
    /// elements made 40 GB of locations (and a 44 KB key, 440 MB on an event loop).
    static func located(_ location: String, _ separator: String, _ part: String) -> String {
        let used = location.utf8.count
        if used >= maximumLocationBytes - 3 { return location }
        if used + separator.utf8.count + part.utf8.count <= maximumLocationBytes { return location + separator + part }
        var kept = String.UnicodeScalarView()
        var room = maximumLocationBytes - used - 3  // the `…`
        for scalar in [separator.unicodeScalars, part.unicodeScalars].joined() {
            room -= UTF8.width(scalar)
            if room < 0 { break }
            kept.append(scalar)
        }
        return location + String(kept) + "…"
    }

    /// Nesting depth checked inside a nested JSON string; deeper JSON refuses the call (`nestedJSONTooDeep`).
    public static let maximumNestedJSONDepth = 64

    /// What a string holds as JSON.
    enum NestedJSON {
        /// Not JSON (as Python's `json.loads` reads it): the string is only a string.
        case notJSON
        /// The object or array it holds.
        case value(JSONValue)
        /// Brackets nested deeper than `maximumNestedJSONDepth`: a server may decode it, the gateway does not.
        case tooDeep
        /// JSON with a string that is not stream-safe (`JSONLimits.maximumCombiningRun`), which escapes can spell in
        /// text that is plain ASCII to the outer parser: a server may decode it, the gateway does not.
        case notStreamSafe
    }

    /// Whether a string starts (after leading whitespace) with `{` or `[`: the strings tried as JSON.
    static func looksLikeJSON(_ text: String) -> Bool {
        guard let first = text.utf8.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }) else { return false }
        return first == UInt8(ascii: "{") || first == UInt8(ascii: "[")
    }

    /// The object or array a string leaf holds as JSON text (after leading whitespace), read as Python's `json.loads`
    /// reads it (repeated keys, `NaN`, lone surrogates: `JSONLimits.lenient`), at any size (the caller pays it from the
    /// budget). Text that is valid JSON until it nests deeper than the bound is `tooDeep` (the parser stops there: it
    /// is recursive); text that stops being JSON first is `notJSON`.
    static func nestedJSON(_ text: String) -> NestedJSON {
        guard looksLikeJSON(text) else { return .notJSON }
        let limits = JSONLimits(maximumDepth: maximumNestedJSONDepth, maximumBytes: Int.max, lenient: true)
        do {
            return .value(try JSONParser.parse(text.utf8, limits: limits))
        } catch {
            return error.isTooDeep ? .tooDeep : error.isNotStreamSafe ? .notStreamSafe : .notJSON
        }
    }

    /// Longest argument name a rule may use, in UTF-8 bytes.
    public static let maximumArgumentNameBytes = 256

    /// A key as rules compare it: NFKC-normalised and lower-cased. A key over 1 KiB is only lower-cased: NFKC shrinks
    /// text at most threefold, so it cannot fold to a rule's argument name, and normalising it would cost unbudgeted
    /// work.
    public static func foldKey(_ key: String) -> String {
        if isPlainASCII(key) || key.utf8.count > 4 * maximumArgumentNameBytes { return key.lowercased() }
        return NormalizationCost.normalized(key).lowercased()
    }

    /// ASCII without `%` or `\\`: NFKC and percent-decoding leave it unchanged, so it has a single form.
    static func isPlainASCII(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "%") && $0 != UInt8(ascii: "\\") }
    }

    /// raw → percent-decoded and NFKC-normalised until stable → backslashes folded; every distinct step kept.
    static func forms(of raw: String) -> [String] {
        var unlimited = Int.max
        return canonicalise(raw, budget: &unlimited)!.forms
    }

    /// The forms, and why the value is ambiguous if it is; each round's bytes taken from `budget`; nil when the budget
    /// runs out.
    ///
    /// NFKC's cost is bounded before it is paid: `NormalizationCost` estimates the bytes a round will produce (the
    /// compatibility decomposition of every scalar: U+FDFA alone becomes 33 bytes) and refuses text that is not
    /// stream-safe (more than 30 combining marks in a row, which makes reordering quadratic). A round whose
    /// percent-decoding changes nothing after an NFKC round ends the work: NFKC is idempotent.
    static func canonicalise(_ raw: String, budget: inout Int) -> (forms: [String], problem: String?)? {
        budget -= raw.utf8.count
        if budget < 0 { return nil }
        if isPlainASCII(raw) { return ([raw], nil) }
        var forms = [raw]
        var current = raw
        var problem: String?
        var stable = false
        var normalised = false
        var ownForms = NormalizationCost.OwnNFKCForms()
        for _ in 0..<maximumRounds {
            let (decoded, valid, changed) = percentDecodedValidating(current)
            // Every round's decoded text (found by review: `%25F0…` and fullwidth `％F0…` reach the outlined letters
            // only in a later round).
            if problem == nil, let unmapped = ownForms.scalarWithoutKnownMapping(in: decoded) {
                problem =
                    "holds U+\(String(unmapped.value, radix: 16, uppercase: true)), which NFKC maps to other characters under Unicode tables newer than the gateway's (a tool with them could read it as ASCII)"
            }
            if !valid && problem == nil { problem = "percent-encoding decodes to invalid UTF-8 (an overlong or truncated form)" }
            if !changed && normalised {
                stable = true
                break
            }
            guard let estimate = NormalizationCost.bytes(of: decoded) else {
                return (forms, "more than \(NormalizationCost.maximumCombiningRun) combining marks in a row (not stream-safe text)")
            }
            budget -= estimate
            if budget < 0 { return nil }
            let next = NormalizationCost.normalized(decoded, remembering: &ownForms)
            normalised = true
            // Compared as bytes: Swift `==` is canonical equivalence and would call a decomposed text its own NFKC form.
            if next.hasSameBytes(as: current) {
                stable = true
                break
            }
            // The percent-decoded text is a form of its own when NFKC changes it again: a tool that only decodes sees
            // `>` + U+0338 where NFKC makes `≯` of them.
            if changed && !decoded.hasSameBytes(as: next) && !decoded.hasSameBytes(as: current) { forms.append(decoded) }
            current = next
            forms.append(current)
        }
        if !stable && problem == nil { problem = "encoded more than \(maximumRounds) levels deep" }
        // Byte for byte: `\` is ASCII and never part of another scalar's UTF-8 (Foundation's replacingOccurrences
        // bridged the text to UTF-16 and back, a third of the time of a large accented argument).
        if current.containsByte(UInt8(ascii: "\\")) {
            forms.append(String(decoding: current.utf8.map { $0 == UInt8(ascii: "\\") ? UInt8(ascii: "/") : $0 }, as: UTF8.self))
        }
        return (forms, problem)
    }

    /// Decodes every valid `%XX`; invalid sequences stay as they are; invalid UTF-8 becomes U+FFFD.
    static func percentDecoded(_ text: String) -> String {
        percentDecodedValidating(text).text
    }

    /// `percentDecoded`, whether the decoded bytes were valid UTF-8, and whether anything was decoded.
    static func percentDecodedValidating(_ text: String) -> (text: String, valid: Bool, changed: Bool) {
        guard text.containsByte(UInt8(ascii: "%")) else { return (text, true, false) }
        let bytes = Array(text.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = HexDigit.value(bytes[index + 1]), let low = HexDigit.value(bytes[index + 2])
            {
                output.append(high << 4 | low)
                index += 3
            } else {
                output.append(bytes[index])
                index += 1
            }
        }
        let changed = output.count != bytes.count
        if let valid = String(validating: output, as: UTF8.self) { return (valid, true, changed) }
        return (String(decoding: output, as: UTF8.self), false, changed)
    }
}

/// A regular expression matched in linear time (Thompson NFA simulation, no backtracking): a hostile pattern or
/// input can cost at most `O(pattern × input)` steps, never exponential time. Written here because Swift's `Regex`
/// and ICU backtrack, and a policy engine on every request must not be stallable.
///
/// Syntax (a subset of POSIX ERE / PCRE): literals, `.`, `[...]` and `[^...]` with ranges, `\d \D \w \W \s \S`,
/// escapes `\. \\ \/ \- \n \t \r` etc., anchors `^ $`, groups `(...)` and `(?:...)`, alternation `|`,
/// quantifiers `* + ? {m} {m,} {m,n}` (n ≤ 1000 in total expansion), and a leading `(?i)` for case-insensitive
/// matching. Back-references and look-around are refused at load time. Matching is a search (like `re.search`):
/// the pattern may match anywhere unless anchored.
public struct LinearRegex: Sendable, Hashable, CustomStringConvertible {
    /// The pattern as written.
    public let pattern: String
    private let program: [Instruction]
    private let caseInsensitive: Bool

    enum Instruction: Sendable, Hashable {
        case scalar(Unicode.Scalar)
        case any
        case set(CharacterSet, negated: Bool)
        case split(Int, Int)
        case jump(Int)
        case lineStart
        case lineEnd
        case match
    }

    /// A set of scalar ranges.
    struct CharacterSet: Sendable, Hashable {
        var ranges: [ClosedRange<UInt32>] = []
        func contains(_ value: UInt32) -> Bool { ranges.contains { $0.contains(value) } }
    }

    /// Compiles `pattern`, or throws a `RegexError` saying where it is wrong.
    public init(_ pattern: String) throws(RegexError) {
        var parser = RegexParser(Array(pattern.unicodeScalars))
        let (node, caseInsensitive) = try parser.parseAll()
        var compiler = RegexCompiler()
        try compiler.emit(node)
        compiler.program.append(.match)
        guard compiler.program.count <= 20_000 else {
            throw RegexError(pattern: pattern, reason: "pattern expands to more than 20000 steps")
        }
        self.pattern = pattern
        self.program = compiler.program
        self.caseInsensitive = caseInsensitive
    }

    public var description: String { pattern }

    /// What a search found.
    public enum Outcome: Sendable, Hashable {
        case matched
        case notMatched
        /// The search was given up after `stepBudget(forScalars:)` steps (a large pattern over a large value): the
        /// caller fails closed.
        case tooCostly
    }

    /// Steps (instructions visited, summed over positions) one search may take: two million, and 32 per input scalar.
    /// A few milliseconds for a value decided on the event loop; a pattern that keeps thousands of threads alive over a
    /// long value (`[a-z0-9]{1000}Q` over 64 KiB: 128 million steps) is given up instead. (Counted as live threads
    /// until the splits and jumps leading to them were counted too, the budget was half this: an alternation of
    /// words visits about two instructions per thread, so the values it can search stayed about as large.)
    public static func stepBudget(forScalars count: Int) -> Int { 2_000_000 + 32 * count }

    /// Whether the pattern matches anywhere in `text` (false also when the search was given up: use `search` where
    /// that must fail closed).
    public func matches(_ text: String) -> Bool { search(text) == .matched }

    /// Whether the pattern matches anywhere in `text`, or that the search would cost more than its own budget.
    public func search(_ text: String) -> Outcome {
        var steps = Self.stepBudget(forScalars: text.unicodeScalars.count)
        return search(text, steps: &steps)
    }

    /// Whether the pattern matches anywhere in `text`, taking its steps from `steps` (shared by the searches of one
    /// call), or that they ran out.
    public func search(_ text: String, steps budget: inout Int) -> Outcome {
        let input = Array((caseInsensitive ? text.lowercased() : text).unicodeScalars)
        // `seen[pc] == generation` marks instructions already on the list being built for this step. Filling it costs
        // a step per instruction (10,000 empty values against a pattern of 20,000 instructions are 200 million).
        budget -= program.count
        var seen = [Int](repeating: -1, count: program.count)
        var generation = 0
        // Instructions visited since the budget was last charged: the threads and every split and jump leading to
        // them. (Charging threads only missed the splits: `(?:(?:|){1000}){9}x` walks 18,000 of them at every
        // position while keeping two threads, a billion steps over 64 KiB charged as 130,000: found by review.)
        var visited = 0
        // Followed with a stack of its own, not by recursion: a chain of 20,000 empty alternatives is as deep.
        var pending: [Int] = []
        func add(_ start: Int, to list: inout [Int], at position: Int) {
            pending.append(start)
            while let pc = pending.popLast() {
                guard seen[pc] != generation else { continue }
                seen[pc] = generation
                visited += 1
                switch program[pc] {
                case .jump(let target): pending.append(target)
                case .split(let first, let second):
                    pending.append(second)
                    pending.append(first)
                case .lineStart: if position == 0 { pending.append(pc + 1) }
                case .lineEnd: if position == input.count { pending.append(pc + 1) }
                default: list.append(pc)
                }
            }
        }
        var current: [Int] = []
        add(0, to: &current, at: 0)
        for position in 0...input.count {
            // Charged before anything is decided, so the first closure (all of an empty value's work) and the last
            // count too.
            budget -= visited
            visited = 0
            if budget < 0 { return .tooCostly }
            if current.contains(where: { program[$0] == .match }) { return .matched }
            guard position < input.count else { return .notMatched }
            let scalar = input[position]
            generation += 1
            var next: [Int] = []
            for pc in current {
                let advances: Bool
                switch program[pc] {
                case .scalar(let expected): advances = scalar == expected
                case .any: advances = scalar != "\n"
                case .set(let set, let negated): advances = set.contains(scalar.value) != negated
                default: advances = false
                }
                if advances { add(pc + 1, to: &next, at: position + 1) }
            }
            // Unanchored search: a new thread starts at every position.
            add(0, to: &next, at: position + 1)
            current = next
        }
        return .notMatched
    }
}

/// A pattern that cannot be compiled, with the reason.
public struct RegexError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The offending pattern.
    public let pattern: String
    /// What is wrong with it.
    public let reason: String
    public var description: String { "invalid regular expression '\(pattern)': \(reason)" }
}

indirect enum RegexNode: Hashable {
    case empty
    case scalar(Unicode.Scalar)
    case any
    case set(LinearRegex.CharacterSet, negated: Bool)
    case lineStart
    case lineEnd
    case concatenation([RegexNode])
    case alternation([RegexNode])
    case repetition(RegexNode, min: Int, max: Int?)
}

struct RegexParser {
    private let scalars: [Unicode.Scalar]
    private var index = 0
    private var caseInsensitive = false

    init(_ scalars: [Unicode.Scalar]) { self.scalars = scalars }

    private var pattern: String { String(String.UnicodeScalarView(scalars)) }
    private func fail(_ reason: String) -> RegexError { RegexError(pattern: pattern, reason: "\(reason) at position \(index)") }
    private var current: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

    mutating func parseAll() throws(RegexError) -> (RegexNode, Bool) {
        if scalars.starts(with: Array("(?i)".unicodeScalars)) {
            caseInsensitive = true
            index = 4
        }
        let node = try parseAlternation()
        guard index == scalars.count else { throw fail("unbalanced ')'") }
        return (node, caseInsensitive)
    }

    private mutating func parseAlternation() throws(RegexError) -> RegexNode {
        var branches = [try parseConcatenation()]
        while current == "|" {
            index += 1
            branches.append(try parseConcatenation())
        }
        return branches.count == 1 ? branches[0] : .alternation(branches)
    }

    private mutating func parseConcatenation() throws(RegexError) -> RegexNode {
        var items: [RegexNode] = []
        while let scalar = current, scalar != "|", scalar != ")" {
            var atom = try parseAtom()
            while let quantifier = current, "*+?{".unicodeScalars.contains(quantifier) {
                if case .lineStart = atom { throw fail("nothing to repeat") }
                atom = try parseQuantifier(atom)
            }
            items.append(atom)
        }
        return items.count == 1 ? items[0] : (items.isEmpty ? .empty : .concatenation(items))
    }

    private mutating func parseQuantifier(_ atom: RegexNode) throws(RegexError) -> RegexNode {
        let scalar = scalars[index]
        index += 1
        switch scalar {
        case "*": return .repetition(atom, min: 0, max: nil)
        case "+": return .repetition(atom, min: 1, max: nil)
        case "?": return .repetition(atom, min: 0, max: 1)
        default:
            var low = "", high: String? = nil
            while let digit = current, digit.properties.numericType != nil { low.unicodeScalars.append(digit); index += 1 }
            if current == "," {
                index += 1
                high = ""
                while let digit = current, digit.properties.numericType != nil { high!.unicodeScalars.append(digit); index += 1 }
            }
            guard current == "}", let minimum = Int(low) else { throw fail("malformed {m,n} quantifier") }
            index += 1
            let maximum: Int? = high.map { $0.isEmpty ? nil : Int($0) } ?? minimum
            if let maximum, maximum < minimum { throw fail("{m,n} with n < m") }
            guard minimum <= 1000, (maximum ?? 0) <= 1000 else { throw fail("repetition counts above 1000") }
            return .repetition(atom, min: minimum, max: maximum)
        }
    }

    private mutating func parseAtom() throws(RegexError) -> RegexNode {
        let scalar = scalars[index]
        index += 1
        switch scalar {
        case ".": return .any
        case "^": return .lineStart
        case "$": return .lineEnd
        case "(":
            if current == "?" {
                guard index + 1 < scalars.count, scalars[index + 1] == ":" else {
                    throw fail("look-around and inline flags other than a leading (?i) are not supported")
                }
                index += 2
            }
            let inner = try parseAlternation()
            guard current == ")" else { throw fail("missing ')'") }
            index += 1
            return inner
        case "[": return try parseClass()
        case "\\": return try parseEscape(inClass: false)
        case "*", "+", "?", "{": throw fail("nothing to repeat")
        default: return .scalar(caseInsensitive ? Self.lower(scalar) : scalar)
        }
    }

    private mutating func parseEscape(inClass: Bool) throws(RegexError) -> RegexNode {
        guard let scalar = current else { throw fail("trailing backslash") }
        index += 1
        func set(_ ranges: [ClosedRange<UInt32>], negated: Bool) -> RegexNode {
            .set(LinearRegex.CharacterSet(ranges: ranges), negated: negated)
        }
        let digits: [ClosedRange<UInt32>] = [48...57]
        let word: [ClosedRange<UInt32>] = [48...57, 65...90, 97...122, 95...95]
        let space: [ClosedRange<UInt32>] = [9...13, 32...32]
        switch scalar {
        case "d": return set(digits, negated: false)
        case "D": return set(digits, negated: true)
        case "w": return set(word, negated: false)
        case "W": return set(word, negated: true)
        case "s": return set(space, negated: false)
        case "S": return set(space, negated: true)
        case "n": return .scalar("\n")
        case "t": return .scalar("\t")
        case "r": return .scalar("\r")
        case "0": return .scalar("\u{0}")
        case "1"..."9": throw fail("back-references are not supported")
        case "b", "B", "A", "z", "Z": throw fail("\\\(scalar) is not supported")
        default:
            guard !scalar.properties.isAlphabetic else { throw fail("unknown escape \\\(scalar)") }
            return .scalar(scalar)
        }
    }

    private mutating func parseClass() throws(RegexError) -> RegexNode {
        var negated = false
        if current == "^" {
            negated = true
            index += 1
        }
        var set = LinearRegex.CharacterSet()
        var first = true
        while true {
            guard let scalar = current else { throw fail("missing ']'") }
            if scalar == "]" && !first { index += 1; break }
            // `[` inside a class means different things in different engines: a POSIX class (`[[:digit:]]`), a
            // union (Java), a literal (here, before). Refused rather than guessed (found by review: a deny pattern
            // `[[:digit:]]` copied from elsewhere matched "d:]" and no digit).
            if scalar == "[" {
                throw fail("'[' inside [...] must be escaped as \\[ (POSIX classes such as [:digit:] are not supported: use \\d, \\s, \\w)")
            }
            first = false
            index += 1
            var low: UInt32
            if scalar == "\\" {
                switch try parseEscape(inClass: true) {
                case .scalar(let escaped): low = escaped.value
                case .set(let inner, false): set.ranges += inner.ranges; continue
                default: throw fail("negated class escapes inside [...] are not supported")
                }
            } else {
                low = scalar.value
            }
            if current == "-", index + 1 < scalars.count, scalars[index + 1] != "]" {
                index += 1
                var highScalar = scalars[index]
                index += 1
                if highScalar == "\\" {
                    guard case .scalar(let escaped) = try parseEscape(inClass: true) else { throw fail("invalid range end") }
                    highScalar = escaped
                }
                guard highScalar.value >= low else { throw fail("range out of order") }
                set.ranges.append(low...highScalar.value)
            } else {
                set.ranges.append(low...low)
            }
        }
        if caseInsensitive {
            // Input is lower-cased before matching, so upper-case members must be lowered too.
            set.ranges += set.ranges.compactMap { range in
                let lowered = range.clamped(to: 65...90)
                return lowered.isEmpty ? nil : (lowered.lowerBound + 32)...(lowered.upperBound + 32)
            }
        }
        return .set(set, negated: negated)
    }

    static func lower(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        String(scalar).lowercased().unicodeScalars.first ?? scalar
    }
}

struct RegexCompiler {
    var program: [LinearRegex.Instruction] = []

    mutating func emit(_ node: RegexNode) throws(RegexError) {
        guard program.count <= 20_000 else { throw RegexError(pattern: "", reason: "pattern too large") }
        switch node {
        case .empty: break
        case .scalar(let scalar): program.append(.scalar(scalar))
        case .any: program.append(.any)
        case .set(let set, let negated): program.append(.set(set, negated: negated))
        case .lineStart: program.append(.lineStart)
        case .lineEnd: program.append(.lineEnd)
        case .concatenation(let items): for item in items { try emit(item) }
        case .alternation(let branches):
            var jumps: [Int] = []
            for (position, branch) in branches.enumerated() {
                if position < branches.count - 1 {
                    let split = program.count
                    program.append(.split(split + 1, -1))
                    try emit(branch)
                    jumps.append(program.count)
                    program.append(.jump(-1))
                    program[split] = .split(split + 1, program.count)
                } else {
                    try emit(branch)
                }
            }
            for jump in jumps { program[jump] = .jump(program.count) }
        case .repetition(let inner, let minimum, let maximum):
            for _ in 0..<minimum { try emit(inner) }
            if let maximum {
                var splits: [Int] = []
                for _ in minimum..<maximum {
                    splits.append(program.count)
                    program.append(.split(program.count + 1, -1))
                    try emit(inner)
                }
                for split in splits { program[split] = .split(split + 1, program.count) }
            } else {
                let split = program.count
                program.append(.split(split + 1, -1))
                try emit(inner)
                program.append(.jump(split))
                program[split] = .split(split + 1, program.count)
            }
        }
    }
}

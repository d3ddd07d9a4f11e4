/// A case-sensitive name pattern: exact text, or a glob where `*` matches any run of characters (including none)
/// and `?` exactly one. Used for tool names, agent ids, prompt names and resource URIs.
public struct NamePattern: Sendable, Hashable, CustomStringConvertible {
    private enum Token: Hashable, Sendable {
        case literal(Unicode.Scalar)
        case any
        case anyRun
    }

    /// The pattern as written.
    public let text: String
    private let tokens: [Token]

    /// The literal text before the first wildcard (all of it for an exact pattern), for indexing.
    public let literalPrefix: String
    /// Whether the pattern has no wildcard.
    public let isExact: Bool

    /// Parses `text`. Nil for an empty pattern. `\*`, `\?` and `\\` match the character itself.
    public init?(_ text: String) {
        guard !text.isEmpty else { return nil }
        var tokens: [Token] = []
        var escaped = false
        for scalar in text.unicodeScalars {
            if escaped {
                tokens.append(.literal(scalar))
                escaped = false
                continue
            }
            switch scalar {
            case "\\": escaped = true
            case "*": if tokens.last != .anyRun { tokens.append(.anyRun) }
            case "?": tokens.append(.any)
            default: tokens.append(.literal(scalar))
            }
        }
        guard !escaped else { return nil }
        self.text = text
        var prefix = String.UnicodeScalarView()
        for token in tokens {
            guard case .literal(let scalar) = token else { break }
            prefix.append(scalar)
        }
        self.literalPrefix = String(prefix)
        // Exact patterns (the common case) compare by string equality and keep no tokens.
        self.tokens = prefix.count == tokens.count ? [] : tokens
        self.isExact = prefix.count == tokens.count
    }

    /// Whether `name` matches. Linear in `name.count × pattern length` at worst; no backtracking blow-up. The name's
    /// scalars are walked where they lie (a copy of them for each glob tried was an allocation per pattern per call).
    public func matches(_ name: String) -> Bool {
        if isExact { return name == literalPrefix }
        let input = name.unicodeScalars
        // Classic two-pointer glob matching with a single backtrack point for the last `*`.
        var i = input.startIndex, p = 0
        var starP = -1, starI = input.startIndex
        while i < input.endIndex {
            if p < tokens.count {
                switch tokens[p] {
                case .literal(let scalar) where scalar == input[i]:
                    input.formIndex(after: &i)
                    p += 1
                    continue
                case .any:
                    input.formIndex(after: &i)
                    p += 1
                    continue
                case .anyRun:
                    starP = p
                    starI = i
                    p += 1
                    continue
                default:
                    break
                }
            }
            guard starP >= 0 else { return false }
            p = starP + 1
            input.formIndex(after: &starI)
            i = starI
        }
        while p < tokens.count, tokens[p] == .anyRun { p += 1 }
        return p == tokens.count
    }

    public var description: String { text }
}

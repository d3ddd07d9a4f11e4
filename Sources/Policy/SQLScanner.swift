/// The `sql_injection` detector, on a real tokenizer rather than regular expressions over raw text: comments are
/// whitespace, string literals and quoted identifiers are single tokens, `;` separates statements. The text is
/// scanned as it is and as if it sat inside a single- or double-quoted literal (a value spliced into a query), and the
/// token stream is checked for stacked statements, tautologies, UNION, time-based calls, file and database access,
/// and a comment right after a string literal (the rest of a query cut off).
enum SQLScanner {
    enum Token: Equatable {
        case word(String)  // lower-cased identifier or keyword
        case number
        case string  // '…' literal
        case quotedIdentifier  // "…", `…`, […]
        case comment(holdsQuote: Bool)  // whitespace to SQL; holdsQuote: a `'` inside, left over from a cut-off literal
        case semicolon
        case symbol(UInt8)
    }

    /// What the text does that a value must not, or nil. A text that leaves a quote open (`' or true--`,
    /// `admin'--`) is a fragment meant to close a literal it is spliced into, so it is scanned in that context too.
    static func finding(in text: String) -> String? {
        let bytes = Array(text.utf8)
        let (plain, open) = tokens(bytes)
        if let found = check(plain, spliced: false) { return found }
        if let open, let found = check(tokens([open] + bytes).tokens, spliced: true) { return found }
        return nil
    }

    /// The tokens of `bytes`, and the quote left open at the end, if any.
    ///
    /// Comments are kept as tokens (the callers drop them), so that what directly follows a literal can be seen.
    static func tokens(_ bytes: [UInt8]) -> (tokens: [Token], open: UInt8?) {
        var tokens: [Token] = []
        var open: UInt8?
        var index = 0
        func isWordByte(_ byte: UInt8) -> Bool {
            (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F
                || byte == 0x24 || byte >= 0x80
        }
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C:
                index += 1
            case UInt8(ascii: "-") where index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "-"),
                UInt8(ascii: "#"):
                let start = index
                while index < bytes.count && bytes[index] != 0x0A { index += 1 }
                tokens.append(.comment(holdsQuote: bytes[start..<index].contains(UInt8(ascii: "'"))))
            case UInt8(ascii: "/") where index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "*"):
                let start = index
                index += 2
                while index + 1 < bytes.count && !(bytes[index] == UInt8(ascii: "*") && bytes[index + 1] == UInt8(ascii: "/")) {
                    index += 1
                }
                index = min(bytes.count, index + 2)
                tokens.append(.comment(holdsQuote: bytes[start..<index].contains(UInt8(ascii: "'"))))
            case UInt8(ascii: "'"):
                index += 1
                open = UInt8(ascii: "'")
                while index < bytes.count {
                    if bytes[index] == UInt8(ascii: "\\") {
                        index += 2
                        continue
                    }
                    if bytes[index] == UInt8(ascii: "'") {
                        if index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "'") {
                            index += 2
                            continue
                        }
                        open = nil
                        break
                    }
                    index += 1
                }
                index += 1
                tokens.append(.string)
            case UInt8(ascii: "\""), UInt8(ascii: "`"), UInt8(ascii: "["):
                let close = byte == UInt8(ascii: "[") ? UInt8(ascii: "]") : byte
                index += 1
                while index < bytes.count && bytes[index] != close { index += 1 }
                if index >= bytes.count && byte == UInt8(ascii: "\"") { open = byte }
                index += 1
                tokens.append(.quotedIdentifier)
            case UInt8(ascii: ";"):
                index += 1
                tokens.append(.semicolon)
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                while index < bytes.count && (isWordByte(bytes[index]) || bytes[index] == UInt8(ascii: ".")) { index += 1 }
                tokens.append(.number)
            default:
                if isWordByte(byte) {
                    let start = index
                    while index < bytes.count && isWordByte(bytes[index]) { index += 1 }
                    tokens.append(.word(String(decoding: bytes[start..<index], as: UTF8.self).lowercased()))
                } else {
                    index += 1
                    tokens.append(.symbol(byte))
                }
            }
        }
        return (tokens, open)
    }

    /// Words a read-only query may not contain: statements and clauses that change data or schema, and functions with
    /// side effects (files, sleeping, locks, sequences, large objects).
    static let sideEffects: Set<String> = [
        "insert", "update", "delete", "merge", "upsert", "drop", "alter", "create", "truncate", "rename", "grant",
        "revoke", "attach", "detach", "copy", "pragma", "vacuum", "reindex", "analyze", "call", "exec", "execute", "do",
        "set", "reset", "lock", "unlock", "load", "into", "outfile", "dumpfile", "load_file", "sleep", "pg_sleep",
        "pg_sleep_for", "benchmark", "waitfor", "nextval", "setval", "lo_import", "lo_export", "dblink", "xp_cmdshell",
        "pg_read_file", "pg_write_file", "pg_terminate_backend", "for",
    ]

    /// Why `text` is not exactly one read-only query (`SELECT …`, or `WITH …` ending in a SELECT), or nil when it is.
    /// Comments are whitespace; words inside literals and quoted identifiers do not count.
    static func readOnlyProblem(_ text: String) -> String? {
        let (all, open) = tokens(Array(text.utf8))
        if open != nil { return "an unterminated literal" }
        var tokens = all.filter { !$0.isComment }
        while tokens.last == .semicolon { tokens.removeLast() }
        guard case .word(let first)? = tokens.first, first == "select" || first == "with" || first == "values" else {
            return "it does not start with SELECT, WITH or VALUES"
        }
        if tokens.contains(.semicolon) { return "more than one statement" }
        for token in tokens {
            if case .word(let word) = token, sideEffects.contains(word) { return "it uses \(word.uppercased())" }
        }
        return nil
    }

    static let timeFunctions: Set<String> = ["sleep", "pg_sleep", "benchmark", "dbms_lock", "pg_sleep_for"]
    static let fileAndDatabase: Set<String> = [
        "attach", "pragma", "load_file", "outfile", "dumpfile", "xp_cmdshell", "lo_import", "lo_export",
    ]

    static func check(_ all: [Token], spliced: Bool) -> String? {
        let tokens = all.filter { !$0.isComment }
        func word(_ index: Int) -> String? {
            guard index < tokens.count, case .word(let text) = tokens[index] else { return nil }
            return text
        }
        func isConstant(_ index: Int) -> Bool {
            guard index < tokens.count else { return false }
            switch tokens[index] {
            case .number, .string: return true
            case .word(let text): return text == "true" || text == "false" || text == "null"
            default: return false
            }
        }
        for (index, token) in tokens.enumerated() {
            switch token {
            case .semicolon:
                if tokens[(index + 1)...].contains(where: { $0 != .semicolon }) { return "stacked statements" }
            case .word(let text):
                if text == "union" {
                    var next = index + 1
                    while let modifier = word(next), modifier == "all" || modifier == "distinct" { next += 1 }
                    if word(next) == "select" || (next < tokens.count && tokens[next] == .symbol(UInt8(ascii: "("))) {
                        return "UNION SELECT"
                    }
                }
                if timeFunctions.contains(text), index + 1 < tokens.count, tokens[index + 1] == .symbol(UInt8(ascii: "(")) {
                    return "time-based call \(text)()"
                }
                if text == "waitfor", word(index + 1) == "delay" { return "time-based WAITFOR DELAY" }
                if fileAndDatabase.contains(text) { return "file or database access (\(text))" }
                if text == "copy", let next = word(index + 1), next != "of" {
                    if tokens[(index + 1)...].contains(where: {
                        if case .word(let w) = $0 { return w == "to" || w == "from" || w == "program" }; return false
                    }) {
                        return "COPY statement"
                    }
                }
                if text == "or" || text == "and" || text == "xor" {
                    // A constant, or constant-comparison-constant, right after OR/AND: a condition always true.
                    if isConstant(index + 1) {
                        let after = index + 2
                        if after >= tokens.count { return "tautology after \(text.uppercased())" }
                        if case .symbol(let op) = tokens[after],
                            [UInt8(ascii: "="), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "!")].contains(op)
                        {
                            var right = after + 1
                            if right < tokens.count, case .symbol(let second) = tokens[right],
                                second == UInt8(ascii: "=") || second == UInt8(ascii: ">")
                            {
                                right += 1
                            }
                            if isConstant(right) { return "tautology after \(text.uppercased())" }
                        }
                        if word(after) == "like" || word(after) == "is" { return "tautology after \(text.uppercased())" }
                        if let next = word(after), ["or", "and", "limit", "order", "group", "union"].contains(next) {
                            return "tautology after \(text.uppercased())"
                        }
                    }
                }
            default:
                break
            }
        }
        // A comment right after a string literal cuts the rest of a query off: in a value that closes the literal it is
        // spliced into (`admin'--`), or in a whole query where the comment holds the quote it cut off
        // (`… = 'admin'--'`). In a whole query such as `… = 'O''Brien' -- newest` it is only a comment.
        for (index, token) in all.enumerated() where token == .string && index + 1 < all.count {
            if case .comment(let holdsQuote) = all[index + 1], spliced || holdsQuote { return "comment after a string literal" }
        }
        if spliced, let first = all.first, first == .string, all.count >= 2, all[1] == .semicolon {
            return "stacked statements"
        }
        return nil
    }
}

extension SQLScanner.Token {
    /// Whether the token is a comment (whitespace to SQL).
    var isComment: Bool {
        if case .comment = self { return true }
        return false
    }
}

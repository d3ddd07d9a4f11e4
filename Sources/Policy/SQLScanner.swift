/// The `sql_injection` detector and the `read_only_sql` constraint, on `SQLTokenizer` (never regular expressions over
/// raw text).
///
/// A value is read as every database asked for reads it (all four by default), as it is, and as if spliced into each
/// kind of quote it contains (`'`, `"`, `` ` ``): `1' OR '1'='1` is harmless data on its own and a tautology once it
/// closes the literal it is pasted into.
/// (A value that starts like a query and leaves nothing open is read only as a query: turned inside out, its literals
/// would read as code.)
/// What a value is decides what is looked for:
/// - a **query** (it starts with a statement keyword such as `SELECT`): stacked statements, `UNION SELECT`, time-based
///   calls, file and database access, tautologies after `OR`, constant comparisons after `AND`, a comment cutting a
///   literal off;
/// - a **fragment** (anything else, and every spliced reading): all of that, and the shapes of boolean- and error-based
///   blind injection — a condition built from constants, a subquery, a `CASE` or a function call after `AND`/`OR`/`NOT`,
///   a subquery anywhere, a condition inside a function call, `ORDER BY <number>`, `RLIKE (`.
enum SQLScanner {
    private typealias Token = SQLTokenizer.Token

    /// What the text does that a value must not, read as each of `databases` reads it, or nil.
    static func finding(in text: String, databases: [SQLDialect] = SQLDialect.allCases) -> String? {
        let bytes = Array(text.utf8)
        // A reading that gives the text (and its spliced forms) the tokens an earlier one gave it finds what that found.
        for dialect in SQLTokenizer.Dialect.distinctReadings(of: databases, for: bytes) {
            let splicedMode: Mode
            do {
                // Scoped, so that one reading's tokens are held at a time (a 4 MiB value can have millions).
                let plain = SQLTokenizer.tokens(bytes, dialect)
                if plain.unicodeEscapedIdentifier { return unicodeEscapedIdentifier }
                let isQuery = startsAsStatement(plain.tokens)
                if let found = check(plain, mode: isQuery ? .query : .fragment) { return found }
                // A balanced query spliced into a literal is read with the strong rules only: turned inside out, its
                // literals read as code, where the shapes of blind injection would be false alarms.
                splicedMode = isQuery && !plain.unterminated ? .splicedQuery : .spliced
            }
            for quote in [UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "`")] where bytes.contains(quote) {
                let splicedResult = SQLTokenizer.tokens([quote] + bytes, dialect)
                if splicedResult.unicodeEscapedIdentifier {
                    return
                        "\(unicodeEscapedIdentifier) (spliced into \(Character(Unicode.Scalar(quote)))…\(Character(Unicode.Scalar(quote))))"
                }
                if let found = check(splicedResult, mode: splicedMode) {
                    return "\(found) (spliced into \(Character(Unicode.Scalar(quote)))…\(Character(Unicode.Scalar(quote))))"
                }
            }
        }
        return nil
    }

    /// What both checks say of `U&"…"`: PostgreSQL decodes its escapes (`U&"pg\005fsleep"(5)` calls `pg_sleep`), so its
    /// name cannot be compared with the names of functions and statements.
    static let unicodeEscapedIdentifier = "an identifier written with Unicode escapes (U&\"…\"), whose name cannot be checked"

    private enum Mode {
        /// A whole statement.
        case query
        /// A value meant to be pasted into a query.
        case fragment
        /// A value read as if it closed the literal it is pasted into.
        case spliced
        /// A whole query read as if it closed a literal: stacked statements only when a statement follows the `;`, and
        /// the blind-injection shapes after AND/OR, but not the fragment rules its literals turned inside out would trip.
        case splicedQuery
    }

    static let statementKeywords: Set<String> = [
        "select", "with", "values", "insert", "update", "delete", "merge", "replace", "create", "drop", "alter", "truncate",
        "grant", "revoke", "exec", "execute", "call", "explain", "show", "describe", "pragma", "copy", "attach", "set",
        "begin", "commit", "rollback", "declare",
    ]

    /// Whether the text starts with a statement keyword followed by a space, `(` or `*`: then it is a query, not a
    /// fragment. (`(SELECT …)` is an expression meant to replace a value, and `select' OR '1'='1` a word glued to the
    /// quote that closes a literal: fragments.)
    private static func startsAsStatement(_ code: [Token]) -> Bool {
        guard let first = code.first, first.word.map(statementKeywords.contains) == true else { return false }
        guard code.count > 1 else { return true }
        let second = code[1]
        return second.start > first.end || second.isSymbol("(") || second.isSymbol("*")
    }

    /// Words that start a statement after a `;`: the statement keywords, and statements of PostgreSQL, SQLite, MySQL and
    /// SQL Server that a value never starts with (`; DO $$ … $$` runs code in PostgreSQL).
    static let statementStarts = statementKeywords.union(anywhereStatementWords).union([
        "do", "load", "lock", "unlock", "vacuum", "analyze", "analyse", "listen", "notify", "unlisten", "prepare", "deallocate",
        "cluster", "refresh", "checkpoint", "reindex", "table", "reset", "discard", "fetch", "move", "close", "import",
        "comment", "security", "abort", "start", "end", "savepoint", "release", "detach", "upsert", "rename", "use", "handler",
        "optimize", "repair", "flush", "purge", "install", "uninstall", "restart", "get", "open", "print", "raiserror", "throw",
        "reconfigure", "deny", "revert", "setuser", "if", "while", "goto", "return",
    ])

    static let timeFunctions: Set<String> = [
        "sleep", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "benchmark", "sleepeachrow", "receive_message", "randomblob",
    ]
    /// Statements that have no place inside a read-only query, wherever they appear (SQL Server runs a statement that
    /// follows another without a `;`).
    static let anywhereStatementWords: Set<String> = [
        "exec", "execute", "waitfor", "shutdown", "backup", "restore", "kill", "dbcc", "declare", "openquery", "openrowset",
        "opendatasource", "bulk", "handler", "sp_executesql", "xp_cmdshell",
    ]
    static let fileFunctions: Set<String> = [
        "load_file", "lo_import", "lo_export", "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_write_file", "sys_exec",
        "sys_eval", "utl_http", "utl_inaddr", "dbms_xmlgen", "xp_dirtree", "xp_fileexist", "openrowset", "opendatasource",
    ]
    /// What calling a function of `timeFunctions` or of `fileFunctions` is.
    enum CalledFunctionKind { case time, file }
    static let calledFunctionKinds: [String: CalledFunctionKind] = Dictionary(
        timeFunctions.map { ($0, .time) } + fileFunctions.map { ($0, .file) }, uniquingKeysWith: { time, _ in time })

    /// Words that may appear in the arguments of a call written by SQL rather than by a person.
    static let expressionWords: Set<String> = [
        "select", "from", "where", "case", "when", "then", "else", "end", "null", "and", "or", "not", "xor", "if", "true",
        "false", "dual", "as", "like", "in", "is", "all", "distinct", "limit", "union", "char", "chr", "concat", "cast",
        "int", "integer", "varchar", "nvarchar", "char", "numeric", "text", "signed", "unsigned", "binary", "mod", "div",
    ]

    /// Objects that `DROP`, `CREATE` and `ALTER` name.
    static let schemaObjects: Set<String> = [
        "table", "database", "view", "procedure", "proc", "function", "index", "schema", "user", "login", "trigger", "role",
        "sequence", "type", "synonym", "assembly",
    ]

    /// The statement that starts at `code[index]`, in a shape no value has (`DELETE FROM`, `DROP TABLE`, `INSERT INTO`,
    /// `UPDATE … SET`, `TRUNCATE TABLE`, `SHUTDOWN`, `EXEC name`, `DECLARE @`, `BACKUP DATABASE`, `MERGE INTO`,
    /// `GRANT … TO`, `DENY … ON`, `WHILE 1=1`, `DISABLE TRIGGER`, `BEGIN TRAN`, `SAVE TRAN`, a final `COMMIT`, `USE master`,
    /// `SETUSER`, `RAISERROR(`), named; nil otherwise.
    /// English words that happen to be keywords (`I said 'select all'`, `'drop' it`) do not make these shapes.
    private static func statementShape(_ code: [Token], at index: Int) -> String? {
        guard index < code.count, let first = code[index].word else { return nil }
        func word(_ offset: Int) -> String? { index + offset < code.count ? code[index + offset].word : nil }
        switch first {
        case "delete" where word(1) == "from": return "DELETE FROM"
        case "insert" where word(1) == "into": return "INSERT INTO"
        case "truncate" where word(1) == "table": return "TRUNCATE TABLE"
        case "drop", "create", "alter":
            guard let object = word(1), schemaObjects.contains(object) else { return nil }
            return "\(first.uppercased()) \(object.uppercased())"
        case "update":
            // UPDATE name SET, UPDATE schema.name SET, UPDATE [name] SET.
            for offset in 2...5 where word(offset) == "set" { return "UPDATE … SET" }
            return nil
        case "shutdown":
            return index + 1 == code.count || word(1) == "with" ? "SHUTDOWN" : nil
        case "exec", "execute":
            return index + 1 < code.count && (code[index + 1].name != nil || code[index + 1].isSymbol("(") || code[index + 1].isSymbol("@"))
                ? "EXEC" : nil
        case "declare" where index + 1 < code.count && code[index + 1].isSymbol("@"): return "DECLARE"
        case "backup", "restore":
            guard let object = word(1), object == "database" || object == "log" else { return nil }
            return "\(first.uppercased()) \(object.uppercased())"
        case "merge":
            // MERGE INTO t USING …, and SQL Server's MERGE t USING …
            if word(1) == "into" { return "MERGE INTO" }
            for offset in 2...4 where word(offset) == "using" { return "MERGE … USING" }
            return nil
        case "grant", "deny", "revoke":
            // GRANT SELECT ON t TO public, DENY CONTROL TO x, REVOKE … FROM x: a permission, then ON, TO or FROM
            // (`3 grant applications to review` names no permission).
            guard let permission = word(1), permissions.contains(permission) else { return nil }
            for offset in 2...8 {
                guard index + offset < code.count else { return nil }
                if let text = word(offset), ["on", "to", "from"].contains(text) { return "\(first.uppercased()) … \(text.uppercased())" }
                if code[index + offset].isConstant { return nil }
            }
            return nil
        case "while":
            // A loop: WHILE 1=1 …, WHILE (…) …, WHILE @i < 5 …, WHILE EXISTS (…) …
            guard index + 1 < code.count else { return nil }
            let next = code[index + 1]
            if next.isSymbol("(") || next.isSymbol("@") || next.word == "exists" || next.word == "not" { return "WHILE" }
            if next.isConstant, index + 2 < code.count, case .symbol(let byte) = code[index + 2].kind,
                byte == UInt8(ascii: "=") || byte == UInt8(ascii: "<") || byte == UInt8(ascii: ">") || byte == UInt8(ascii: "!")
            {
                return "WHILE"
            }
            return nil
        case "enable" where word(1) == "trigger", "disable" where word(1) == "trigger": return "\(first.uppercased()) TRIGGER"
        case "begin" where ["tran", "transaction", "distributed", "dialog", "conversation"].contains(word(1) ?? ""),
            "save" where ["tran", "transaction"].contains(word(1) ?? ""):
            return "\(first.uppercased()) \(word(1)!.uppercased())"
        case "commit", "rollback":
            // COMMIT TRAN, ROLLBACK WORK (`1 commit` and `ORDER BY commit` are prose and a column; `read_only_sql` is
            // stricter: `readOnlyStatement`).
            return ["tran", "transaction", "work"].contains(word(1) ?? "") ? "\(first.uppercased()) \(word(1)!.uppercased())" : nil
        case "use":
            // USE master, USE [db] (`1 use case` is prose: an unquoted name other than a system database's is not taken).
            guard let name = databaseChange(code, at: index), code[index + 1].isQuotedIdentifier || systemDatabases.contains(name)
            else { return nil }
            return "USE"
        case "setuser":
            // SETUSER, SETUSER 'name' (`3 setuser` is no statement of SQL Server's).
            return index + 1 == code.count || code[index + 1].kind == .string ? "SETUSER" : nil
        case "reconfigure", "revert":
            // RECONFIGURE [WITH OVERRIDE], REVERT [WITH COOKIE = @c]: alone or with WITH (`3 revert commits` is prose).
            return index + 1 == code.count || word(1) == "with" ? first.uppercased() : nil
        case "writetext", "updatetext":
            // WRITETEXT table.column …
            return index + 2 < code.count && code[index + 1].name != nil && code[index + 2].isSymbol(".") ? first.uppercased() : nil
        case "receive" where word(1) == "top" || (index + 1 < code.count && code[index + 1].isSymbol("*")):
            return "RECEIVE"
        case "open" where ["symmetric", "master"].contains(word(1) ?? ""),
            "close" where ["symmetric", "master", "all"].contains(word(1) ?? ""):
            return "\(first.uppercased()) \(word(1)!.uppercased()) KEY"
        case "raiserror" where index + 1 < code.count && code[index + 1].isSymbol("("): return "RAISERROR"
        default: return nil
        }
    }

    private static func check(_ text: SQLTokenizer.Result, mode: Mode) -> String? {
        let code = text.tokens
        func word(_ index: Int) -> String? { index < code.count ? code[index].word : nil }
        func symbol(_ index: Int, _ character: Unicode.Scalar) -> Bool { index < code.count && code[index].isSymbol(character) }
        func constant(_ index: Int) -> Bool { index < code.count && code[index].isConstant }
        // Everything below looks ahead a bounded number of tokens, or uses these facts computed in one pass, so
        // that checking is linear in the value's size (`;;;;…`, `not not …` and `a(a(a(…` cost no more than text).
        let groups = ParenthesisGroups(code)
        var nextNonSemicolon = [Int](repeating: code.count, count: code.count + 1)
        for index in stride(from: code.count - 1, through: 0, by: -1) {
            nextNonSemicolon[index] = code[index].kind == .semicolon ? nextNonSemicolon[index + 1] : index
        }
        /// Whether `code[index]` is a function name followed by its argument list. The name may be quoted: `"pg_sleep"(10)`,
        /// `` `sleep`(5) `` and `[sleep](5)` are calls of those functions.
        func call(_ index: Int) -> Bool {
            guard index < code.count, code[index].name != nil, symbol(index + 1, "(") else { return false }
            return code[index].end == code[index + 1].start || groups.looksLikeSQL(open: index + 1)
        }
        /// The index after a constant expression starting at `index`, if one starts there: a literal with any signs
        /// (`-1`), a prefixed literal (`N'a'`, `b'1'`, `x'41'`, `_utf8mb4'a'`), a server variable (`@@version`),
        /// arithmetic on those (`2-1`), and a `COLLATE` after it. A few terms at most: the scan stays linear.
        func constantEnd(_ start: Int) -> Int? {
            var end = start
            for term in 0..<4 {
                var index = end
                while index < end + 8, symbol(index, "-") || symbol(index, "+") || symbol(index, "~") { index += 1 }
                guard index < code.count else { return term == 0 ? nil : end }
                if code[index].isConstant {
                    end = index + 1
                } else if let prefix = word(index),
                    prefix == "n" || prefix == "b" || prefix == "x" || prefix == "e" || prefix.hasPrefix("_"),
                    index + 1 < code.count, code[index + 1].kind == .string, code[index].end == code[index + 1].start
                {
                    end = index + 2
                } else if symbol(index, "@"), symbol(index + 1, "@"), word(index + 2) != nil {
                    end = index + 3
                } else {
                    return term == 0 ? nil : end - 1
                }
                if word(end) == "collate", code.indices.contains(end + 1), code[end + 1].name != nil { end += 2 }
                guard symbol(end, "-") || symbol(end, "+") || symbol(end, "*") || symbol(end, "/") || symbol(end, "%") else { break }
                end += 1
            }
            return end
        }
        /// The index after a comparison operator starting at `index`, if one starts there (`=`, `<>`, `!=`, `<=>`, …).
        func comparison(_ index: Int) -> Int? {
            guard index < code.count else { return nil }
            if case .symbol(let op) = code[index].kind,
                [UInt8(ascii: "="), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "!")].contains(op)
            {
                var next = index + 1
                while next < index + 3, case .symbol(let more)? = next < code.count ? code[next].kind : nil,
                    more == UInt8(ascii: "=") || more == UInt8(ascii: ">")
                {
                    next += 1
                }
                return next
            }
            if let text = word(index), ["like", "rlike", "regexp", "is", "in", "between", "sounds", "glob"].contains(text) {
                return index + 1
            }
            return nil
        }
        let fragment = mode == .fragment || mode == .spliced
        // The shapes of blind injection after AND/OR are looked for in every spliced reading: a value that starts like a
        // query (`select ' OR (SELECT …)='s`) is spliced into a literal all the same.
        let blind = fragment || mode == .splicedQuery
        // SQL Server runs a statement that follows another without a `;`: `x' DELETE FROM users --` closes the literal
        // it is pasted into and stacks a statement behind it, as does `1 DROP TABLE users` pasted where a number goes.
        let valueEnd: Int? =
            mode == .spliced || mode == .splicedQuery ? (code.first?.kind == .string ? 1 : nil) : mode == .fragment ? constantEnd(0) : nil
        if let valueEnd, let statement = statementShape(code, at: valueEnd) {
            return "stacked statements (\(statement) after the value: SQL Server runs it without ';')"
        }

        for (index, token) in code.enumerated() {
            switch token.kind {
            case .semicolon:
                let next = nextNonSemicolon[index + 1]
                if mode == .splicedQuery {
                    if next < code.count, code[next].word.map(statementStarts.contains) == true || code[next].isSymbol("(") {
                        return "stacked statements"
                    }
                } else if next < code.count {
                    return "stacked statements"
                }
            case .symbol(let byte) where fragment && byte == UInt8(ascii: "("):
                if word(index + 1) == "select" && selectListLooksLikeSQL(code, from: index + 2) { return "subquery" }
                if constant(index + 1), let right = comparison(index + 2), constant(right), symbol(right + 1, ")") {
                    return "a constant condition in parentheses"
                }
            default:
                break
            }
            guard let text = token.name else { continue }
            // Most words are none of those compared below: a look at length and first letter spares them a dozen
            // comparisons (a fifth of the time of 4 MiB of `a(`).
            let compared = mayBeComparedWord(text)
            if compared && text == "union" {
                var next = index + 1
                while next < index + 32, let modifier = word(next), modifier == "all" || modifier == "distinct" { next += 1 }
                while next < index + 64, symbol(next, "(") { next += 1 }
                if word(next) == "select" { return "UNION SELECT" }
            }
            // `call` first: a look at the next token, where the set lookup hashes the word (a fifth of the time of
            // 4 MiB of one-letter words).
            // One lookup for both kinds of call (a name is never both), each a hash of the name.
            if call(index), let kind = calledFunctionKinds[text] {
                return kind == .time ? "time-based call \(text)()" : "file or network access (\(text))"
            }
            if compared, text == "waitfor", let next = word(index + 1), next == "delay" || next == "time" { return "time-based WAITFOR" }
            if compared && text == "xp_cmdshell" { return "file or database access (xp_cmdshell)" }
            if compared, text == "into", let next = word(index + 1), next == "outfile" || next == "dumpfile" {
                return "file write (INTO \(next.uppercased()))"
            }
            if compared, text == "attach", word(index + 1) == "database" || (index + 1 < code.count && code[index + 1].kind == .string) {
                return "file or database access (ATTACH)"
            }
            if compared, text == "pragma", word(index + 1) != nil, index == 0 || code[index - 1].kind == .semicolon || fragment {
                return "file or database access (PRAGMA)"
            }
            if compared, text == "copy", copyStatement(code, from: index + 1) { return "COPY statement" }
            if compared && ["or", "and", "xor", "not"].contains(text) {
                if let found = condition(after: index, operator: text) { return found }
            }
            guard fragment else { continue }
            // Generated queries often say WHERE 1=1; a value that does is injecting a condition.
            if compared, text == "where" || text == "having", let found = condition(after: index, operator: text) { return found }
            if compared, text == "case", word(index + 1) == "when" { return "CASE expression" }
            if compared, text == "rlike" || text == "regexp", symbol(index + 1, "(") { return "\(text.uppercased()) on a subquery" }
            if compared, text == "order", word(index + 1) == "by", index + 2 < code.count, code[index + 2].kind == .number {
                return "ORDER BY a column number"
            }
            if compared, text == "procedure", word(index + 1) == "analyse" { return "PROCEDURE ANALYSE" }
            if symbol(index + 1, "("), groups.hasConstantCondition(open: index + 1) {
                return "a constant condition inside a function call"
            }
        }
        // `&&` and `||` are AND and OR in MySQL.
        for index in code.indices.dropLast()
        where (code[index].isSymbol("&") && code[index + 1].isSymbol("&")) || (code[index].isSymbol("|") && code[index + 1].isSymbol("|")) {
            if code[index].end == code[index + 1].start,
                let found = condition(after: index + 1, operator: code[index].isSymbol("&") ? "and" : "or")
            {
                return found
            }
        }
        // A comment right after a string literal cuts the rest of a query off: in a value that closes the literal it is
        // spliced into (`admin'--`), or where the comment holds the quote it cut off (`… = 'admin'--'`). In a whole
        // query such as `… = 'O''Brien' -- newest` it is only a comment.
        if text.commentAfterString && (mode == .spliced || mode == .splicedQuery || text.quoteInCommentAfterString) {
            return "comment after a string literal"
        }
        return nil

        /// What the condition after a boolean operator at `index` does, if it is an injection's.
        func condition(after index: Int, operator text: String) -> String? {
            var next = index + 1
            while next < index + 32, word(next) == "not" || symbol(next, "!") || symbol(next, "(") || symbol(next, "~") { next += 1 }
            let name = text.uppercased()
            if let end = constantEnd(next) {
                var after = end
                while after < end + 8, symbol(after, ")") { after += 1 }  // OR (1)=(1), OR(1)--
                // OR 1, OR -1, OR 2-1, OR @@version, OR true--, OR 'a' LIMIT …: a condition that is always true.
                if text == "or" || text == "xor" {
                    if after >= code.count { return "tautology after \(name)" }
                    if let following = word(after), ["or", "and", "limit", "order", "group", "union", "having"].contains(following) {
                        return "tautology after \(name)"
                    }
                }
                if let right = comparison(after) {
                    var operand = right
                    while operand < right + 8, symbol(operand, "(") || word(operand) == "not" { operand += 1 }
                    // 1=1, 'a'<=>'a', N'a'=N'a', 1 IS NOT NULL.
                    if constantEnd(operand) != nil { return "tautology after \(name)" }
                    if blind && (word(operand) == "select" || word(operand) == "case" || call(operand)) {
                        return "blind-injection condition after \(name)"
                    }
                }
            }
            guard blind else { return nil }
            // OR id=id: a column compared with itself (by a comparison symbol, not prose's "is"), ending the value or
            // followed by what follows a condition ("this or that = that one" is prose).
            if text == "or" || text == "xor", let left = code.indices.contains(next) ? code[next].name : nil, !call(next),
                next + 1 < code.count, case .symbol = code[next + 1].kind, let right = comparison(next + 1),
                right < code.count, code[right].name == left,
                right + 1 == code.count || code[right + 1].kind == .string
                    || word(right + 1).map(["or", "and", "xor", "limit", "order", "group", "union", "having"].contains) == true
            {
                return "tautology after \(name)"
            }
            if let following = word(next), following == "select" || following == "exists" || following == "case" {
                return "\(following.uppercased()) in a condition after \(name)"
            }
            if call(next) { return "function call in a condition after \(name)" }
            return nil
        }
    }

    /// Whether `text` may be one of the words `check` compares each word with (by length and first letter: `union`,
    /// `waitfor`, `xp_cmdshell`, `into`, `attach`, `pragma`, `copy`, `or`, `and`, `xor`, `not`, `where`, `having`,
    /// `case`, `rlike`, `regexp`, `order`, `procedure`). A word added to those comparisons must pass this.
    static func mayBeComparedWord(_ text: String) -> Bool {
        let utf8 = text.utf8
        guard utf8.count >= 2, utf8.count <= 11, let first = utf8.first else { return false }
        switch first {
        case UInt8(ascii: "a"), UInt8(ascii: "c"), UInt8(ascii: "h"), UInt8(ascii: "i"), UInt8(ascii: "n"), UInt8(ascii: "o"),
            UInt8(ascii: "p"), UInt8(ascii: "r"), UInt8(ascii: "u"), UInt8(ascii: "w"), UInt8(ascii: "x"):
            return true
        default:
            return false
        }
    }

    /// Whether the tokens after `SELECT` at `start` are a select list, not prose ("(select one)"): a constant, `*`,
    /// `(`, `CASE`, `NULL`, or a name followed by `(`, `,`, `.` or `FROM`.
    private static func selectListLooksLikeSQL(_ code: [Token], from start: Int) -> Bool {
        guard start < code.count else { return false }
        let first = code[start]
        if first.isConstant || first.isSymbol("*") || first.isSymbol("(") || first.isSymbol("@") || first.word == "case"
            || first.word == "distinct"
        {
            return true
        }
        guard first.word != nil || first.isQuotedIdentifier, start + 1 < code.count else { return false }
        let second = code[start + 1]
        return second.isSymbol("(") || second.isSymbol(",") || second.isSymbol(".") || second.word == "from"
    }

    /// Whether the tokens after `COPY` at `start` are a COPY statement's: a table or `( query )`, then `TO` or `FROM`
    /// and a file name, `PROGRAM`, `STDIN` or `STDOUT` ("copy to clipboard" is not).
    private static func copyStatement(_ code: [Token], from start: Int) -> Bool {
        var index = start
        var depth = 0
        var seen = 0
        while index < code.count && seen < 64 {
            let token = code[index]
            if token.isSymbol("(") { depth += 1 } else if token.isSymbol(")") { depth -= 1 }
            if depth == 0, let text = token.word, text == "to" || text == "from", index + 1 < code.count {
                let target = code[index + 1]
                return target.kind == .string || ["program", "stdin", "stdout"].contains(target.word ?? "")
            }
            index += 1
            seen += 1
        }
        return false
    }

    // MARK: read_only_sql

    /// Words that change data or schema, anywhere in a query (a data-modifying `WITH` included).
    static let modifyingWords: Set<String> = [
        "insert", "update", "delete", "merge", "upsert", "drop", "alter", "create", "truncate", "rename", "grant",
        "revoke", "into", "outfile", "dumpfile",
    ]
    /// Statements that cannot be nested in a query: refused where a statement starts (first, or after `(`).
    static let statementOnlyWords: Set<String> = [
        "attach", "detach", "copy", "pragma", "vacuum", "reindex", "analyze", "call", "exec", "execute", "do", "set", "reset",
        "lock", "unlock", "load", "handler", "listen", "notify", "declare", "begin", "commit", "rollback", "savepoint",
    ]
    /// SQL Server's own databases.
    static let systemDatabases: Set<String> = ["master", "tempdb", "msdb", "model"]

    /// The database a `USE name` at `index` switches to, when the statement ends there or another starts after it; not
    /// MySQL's index hint `USE INDEX (…)`.
    private static func databaseChange(_ code: [Token], at index: Int) -> String? {
        guard code[index].word == "use", index + 1 < code.count, let name = code[index + 1].name,
            !["index", "key", "from"].contains(name),
            index + 2 == code.count || code[index + 2].word.map(statementStarts.contains) == true
        else { return nil }
        return name
    }

    /// What GRANT, DENY and REVOKE give or take first (PostgreSQL, MySQL, SQL Server, SQLite has none).
    static let permissions: Set<String> = [
        "select", "insert", "update", "delete", "all", "control", "execute", "exec", "alter", "references", "usage",
        "connect", "create", "impersonate", "view", "take", "unmask", "drop", "truncate", "trigger", "temporary", "temp",
        "maintain", "grant", "file", "process", "super", "reload", "shutdown", "proxy", "event", "index", "lock", "showplan",
        "backup", "authenticate", "checkpoint", "subscribe", "receive", "send",
    ]
    /// SQL Server table hints that take locks beyond the statement's own reads, or hold them to the end of the
    /// transaction (`WITH (UPDLOCK, HOLDLOCK)`, `WITH (SERIALIZABLE)`).
    static let lockingHints: Set<String> = [
        "updlock", "xlock", "holdlock", "tablockx", "serializable", "repeatableread", "tablock", "paglock",
    ]

    /// What `read_only_sql` refuses besides the detector's shapes, at `code[index]` (not the first token): words that
    /// begin a statement of SQL Server's after another without a `;`, where a column of that name cannot stand.
    /// - `WHILE` anywhere (a loop; no dialect lets it name a column unquoted in a query someone would send);
    /// - `DENY` anywhere (a permission statement);
    /// - `COMMIT`/`ROLLBACK` after a value (`SELECT 1 COMMIT SELECT 2`), not after `BY`, `,`, `(`, `.`, `SELECT` or an
    ///   operator (`ORDER BY commit`, `SELECT a, rollback`), nor before `FROM`/`AS`/`,`/`)`;
    /// - `SET` after a value (`SELECT 1 SET IMPLICIT_TRANSACTIONS ON`), not after `CHARACTER`/`CHAR` (MySQL's
    ///   `CHARACTER SET utf8mb4`);
    /// - `USE name (` (a database switch before a parenthesised query).
    private static func readOnlyStatement(_ code: [Token], at index: Int) -> String? {
        guard let word = code[index].word else { return nil }
        let previous = code[index - 1]
        let next = index + 1 < code.count ? code[index + 1] : nil
        let afterValue =
            previous.isConstant || previous.isSymbol(")") || (previous.name != nil && !readOnlyLeadIns.contains(previous.word ?? ""))
        switch word {
        case "while", "deny":
            return word.uppercased()
        case "commit", "rollback":
            guard afterValue else { return nil }
            if let next, next.isSymbol(",") || next.isSymbol(")") || ["from", "as", "and", "or"].contains(next.word ?? "") { return nil }
            return word.uppercased()
        case "set":
            guard afterValue, !["character", "char", "charset"].contains(previous.word ?? "") else { return nil }
            return "SET"
        case "use":
            guard let next, next.name != nil, !["index", "key", "from"].contains(next.name ?? ""), index + 2 < code.count,
                code[index + 2].isSymbol("(")
            else { return nil }
            return "USE"
        default:
            return nil
        }
    }

    /// Words after which a name is a column or an alias, not a statement (`ORDER BY commit`, `SELECT set`).
    private static let readOnlyLeadIns: Set<String> = [
        "by", "select", "distinct", "as", "from", "join", "where", "and", "or", "not", "on", "when", "then", "else", "in",
        "is", "like", "between", "case", "all", "any", "some", "with", "into", "values", "having", "over", "partition",
        "returning", "top", "limit", "offset", "union", "except", "intersect", "exists",
    ]
    /// Functions with side effects (files, sleeping, locks, sequences, large objects, other servers).
    static let sideEffectFunctions: Set<String> = timeFunctions.union(fileFunctions).union([
        "nextval", "setval", "lo_create", "lo_unlink", "lo_from_bytea", "dblink", "dblink_exec", "xp_cmdshell",
        "pg_terminate_backend", "pg_cancel_backend", "pg_advisory_lock", "pg_advisory_xact_lock", "get_lock", "set_config",
        "pg_reload_conf", "pg_rotate_logfile", "txid_current", "query_to_xml", "dbms_lock", "load_extension", "writefile",
        "readfile", "edit", "pg_notify", "lo_put", "lo_get", "dblink_connect", "dblink_send_query", "pg_try_advisory_lock",
        "pg_try_advisory_xact_lock", "pg_advisory_unlock", "pg_logical_emit_message", "pg_create_logical_replication_slot",
        "pg_drop_replication_slot", "pg_switch_wal", "pg_stat_reset", "pg_file_write", "pg_promote", "master_pos_wait",
        "release_lock", "release_all_locks", "sp_oacreate", "sp_oamethod", "xp_regwrite", "xp_dirtree", "lo_creat", "lowrite",
        "lo_truncate", "lo_truncate64", "pg_create_physical_replication_slot", "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot", "pg_replication_slot_advance", "pg_create_restore_point", "pg_advisory_lock_shared",
        "pg_advisory_xact_lock_shared", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock_shared", "pg_advisory_unlock_all", "pg_backup_start", "pg_backup_stop", "pg_start_backup",
        "pg_stop_backup", "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_log_backend_memory_contexts",
        "pg_import_system_collations",
    ])
    /// Functions with side effects that are refused as calls only (a name followed by `(`): common words too (a table
    /// named `schedule` is read-only), unlike the names above, which are also refused before a `.` (`dbms_lock.sleep`).
    /// pg_cron's, the cloud extensions' and PostgreSQL's maintenance functions, reachable unqualified when their schema
    /// is on the search path (found by review).
    static let sideEffectCalls: Set<String> = [
        "pg_current_xact_id", "pg_switch_xlog", "pg_xlog_replay_pause", "pg_xlog_replay_resume", "pg_prewarm",
        "gin_clean_pending_list", "pg_export_snapshot", "schedule", "schedule_in_database", "unschedule", "alter_job",
        "table_import_from_s3", "query_export_to_s3", "invoke", "blob_put", "blob_delete",
    ]
    /// Families of functions with side effects, by how their names start: PostgreSQL's statistics resets, replication
    /// origins, slots and backups, the extensions that run SQL in the background (pg_background), write files
    /// (adminpack's `pg_file_*`), reach other servers (dblink) or large objects, and SQL Server's extended procedures
    /// (found by review: a list of names alone let `pg_file_unlink`, `pg_background_launch` and the statistics resets
    /// through).
    static let sideEffectPrefixes: [String] = [
        "pg_stat_reset", "pg_stat_statements_reset", "pg_replication_origin_", "pg_background_", "pg_file_", "dblink", "lo_",
        "pg_advisory", "pg_try_advisory", "pg_create_", "pg_drop_", "pg_copy_", "brin_summarize", "brin_desummarize",
        "pg_logical_slot_get_", "pg_wal_replay_", "pg_xlog_replay_", "xp_", "sp_",
    ]
    /// The schemas whose functions a read-only query may call by a qualified name: the system catalogs. Any other
    /// qualifier names an extension's functions (pg_cron's `cron.schedule`, `aws_s3`, `aws_lambda`, `azure_storage`), a
    /// user's (which in PostgreSQL and MySQL may write), or a method of a value (SQL Server's `x.value(…)`): no list of
    /// names can know what they do (found by review).
    static let catalogSchemas: Set<String> = ["pg_catalog", "information_schema"]

    /// Why `text` is not exactly one read-only query (`SELECT …`, `WITH …` or `VALUES …`, in parentheses or not), or
    /// nil when it is. Comments are whitespace; words inside literals and quoted identifiers do not count. The text
    /// must be read-only as each of `databases` reads it.
    static func readOnlyProblem(_ text: String, databases: [SQLDialect] = SQLDialect.allCases) -> String? {
        for dialect in SQLTokenizer.Dialect.readings(of: databases) {
            if let problem = readOnlyProblem(SQLTokenizer.tokens(Array(text.utf8), dialect), readsTableHints: dialect.tableHints) {
                return problem
            }
        }
        return nil
    }

    private static func readOnlyProblem(_ result: SQLTokenizer.Result, readsTableHints: Bool) -> String? {
        if result.unterminated { return "an unterminated literal, identifier or comment" }
        if result.unicodeEscapedIdentifier { return "it uses \(unicodeEscapedIdentifier)" }
        var code = result.tokens
        while code.last?.kind == .semicolon { code.removeLast() }
        guard let first = code.first(where: { !$0.isSymbol("(") })?.word, ["select", "with", "values"].contains(first) else {
            return "it does not start with SELECT, WITH or VALUES"
        }
        if code.contains(where: { $0.kind == .semicolon }) { return "more than one statement" }
        for (index, token) in code.enumerated() {
            // Before names are needed: a non-ASCII name has none (found by review: `"crön".f()` passed).
            if let problem = qualifiedCallProblem(code, at: index, readsTableHints: readsTableHints) { return problem }
            guard let word = token.name else { continue }
            let next = index + 1 < code.count ? code[index + 1] : nil
            if token.word != nil && modifyingWords.contains(word) { return "it uses \(word.uppercased())" }
            if token.word != nil && anywhereStatementWords.contains(word) { return "it uses \(word.uppercased())" }
            if token.word != nil, word == "for", let following = next?.word, ["update", "share", "no", "key"].contains(following) {
                return "it locks rows (FOR \(following.uppercased()))"
            }
            if token.word != nil, word == "lock", next?.word == "in", index + 2 < code.count, code[index + 2].word == "share" {
                return "it locks rows (LOCK IN SHARE MODE)"
            }
            // Table hints, in `WITH (…)` or SQL Server's older `t (NOLOCK)` form: inside a parenthesised list.
            if token.word != nil, lockingHints.contains(word), index > 0, code[index - 1].isSymbol("(") || code[index - 1].isSymbol(",") {
                return "it locks rows (\(word.uppercased()))"
            }
            if token.word != nil, index > 0, let statement = readOnlyStatement(code, at: index) { return "it runs \(statement)" }
            // SQL Server runs a statement that follows another without a `;` (SELECT 1 WHILE 1=1 SELECT 1).
            if token.word != nil, index > 0, let statement = statementShape(code, at: index) { return "it runs \(statement)" }
            if index > 0, let database = databaseChange(code, at: index) { return "it runs USE \(database)" }
            if token.word != nil, statementOnlyWords.contains(word), index == 0 || code[index - 1].isSymbol("(") {
                return "it uses \(word.uppercased())"
            }
            if sideEffectFunctions.contains(word), next?.isSymbol("(") == true || next?.isSymbol(".") == true {
                return "it calls \(word.uppercased())"
            }
            if next?.isSymbol("(") == true, sideEffectCalls.contains(word) || sideEffectPrefixes.contains(where: { word.hasPrefix($0) }) {
                return "it calls \(word.uppercased())"
            }
            // The standard's (and SQL Server's) way to advance a sequence.
            if token.word != nil, word == "next", next?.word == "value", index + 2 < code.count, code[index + 2].word == "for" {
                return "it advances a sequence (NEXT VALUE FOR)"
            }
        }
        return nil
    }
}

extension SQLScanner {
    /// SQL Server's table hints, which its older form writes after a table in parentheses (`dbo.users (NOLOCK)`).
    static let tableHints: Set<String> = lockingHints.union([
        "nolock", "readuncommitted", "readcommitted", "readcommittedlock", "readpast", "rowlock", "nowait", "index", "forceseek",
        "forcescan", "noexpand", "snapshot",
    ])

    /// Why the name at `code[index]` is a call of a function by a qualified name (`schema.f(…)`, `db.schema.f(…)`)
    /// outside the system catalogs, or nil. Only the catalogs named bare count as such: a quoted `"PG_CATALOG"` is another
    /// schema to PostgreSQL, and a non-ASCII name is none of them. Where the reading has SQL Server's table hints, a
    /// table followed by a list of hints only is a table, not a call.
    static func qualifiedCallProblem(_ code: [SQLTokenizer.Token], at index: Int, readsTableHints: Bool) -> String? {
        // `db..f(` (SQL Server's `db.dbo.f`) is qualified too (found by review: only an identifier before the `.`
        // counted).
        guard index >= 2, index + 1 < code.count, code[index + 1].isSymbol("("), code[index - 1].isSymbol("."),
            code[index].isIdentifier, code[index - 2].isIdentifier || code[index - 2].isSymbol(".")
        else { return nil }
        if let qualifier = code[index - 2].word, catalogSchemas.contains(qualifier) { return nil }
        // A table only where one stands: right after FROM or JOIN (found by review: hint words are not reserved, so a
        // derived table could make them columns and pass them to any function, `dbo.f(nolock, readpast)`). A table
        // later in a comma list needs the `WITH (NOLOCK)` form.
        var start = index
        while start >= 2, code[start - 1].isSymbol("."), code[start - 2].isIdentifier || code[start - 2].isSymbol(".") { start -= 2 }
        if readsTableHints, start >= 1, let before = code[start - 1].word, before == "from" || before == "join",
            holdsOnlyTableHints(code, from: index + 1)
        {
            return nil
        }
        let qualifier = code[index - 2].name?.uppercased() ?? "(a non-ASCII name)"
        let function = code[index].name?.uppercased() ?? "(a non-ASCII name)"
        return "it calls \(qualifier).\(function): a function outside the system catalogs may write"
    }

    /// Whether the parenthesised list opening at `code[open]` holds table hints only (`NOLOCK`, `INDEX(ix, 2)`,
    /// `INDEX = ix`, separated by commas), and at least one.
    static func holdsOnlyTableHints(_ code: [SQLTokenizer.Token], from open: Int) -> Bool {
        var index = open + 1
        var hints = 0
        while index < code.count {
            let token = code[index]
            if token.isSymbol(")") { return hints > 0 }
            index += 1
            if token.isSymbol(",") { continue }
            guard let word = token.word, tableHints.contains(word) else { return false }
            hints += 1
            guard word == "index", index < code.count else { continue }
            if code[index].isSymbol("=") {
                guard index + 1 < code.count, code[index + 1].isIdentifier || code[index + 1].kind == .number else { return false }
                index += 2
            } else if code[index].isSymbol("(") {
                index += 1
                while index < code.count, !code[index].isSymbol(")") {
                    guard code[index].isIdentifier || code[index].kind == .number || code[index].isSymbol(",") else { return false }
                    index += 1
                }
                index += 1
            }
        }
        return false
    }
}

/// What the scanner needs to know of each parenthesised group, found in one pass over the tokens: whether its contents
/// read as SQL (every word an SQL word or a function name, and a constant or a call in it: "sleep (0-3 months)" does
/// not, "sleep (5)" and "SLEEP (IF(1=1,5,0))" do), and whether a comparison of two constants stands at its top level
/// (`MAKE_SET(5=5,1)`, `IIF(4276=4276,1,1/0)`). A group left open counts up to the end of the text.
struct ParenthesisGroups {
    /// Per token: `sqlLikeFlag` and `conditionFlag` for a group opening there (an array, not a dictionary: two million
    /// unclosed calls spent a fifth of their time growing and hashing into one).
    private var flags: [UInt8]
    private static let sqlLikeFlag: UInt8 = 1
    private static let conditionFlag: UInt8 = 2

    init(_ code: [SQLTokenizer.Token]) {
        struct Open {
            let index: Int
            var sawValue = false
            var wordsAreSQL = true
            var hasCondition = false
        }
        var stack: [Open] = []
        var flags = [UInt8](repeating: 0, count: code.count)
        func close(_ group: Open) {
            if group.wordsAreSQL && group.sawValue { flags[group.index] |= Self.sqlLikeFlag }
            if group.hasCondition { flags[group.index] |= Self.conditionFlag }
            if !stack.isEmpty {
                stack[stack.count - 1].sawValue = stack[stack.count - 1].sawValue || group.sawValue
                stack[stack.count - 1].wordsAreSQL = stack[stack.count - 1].wordsAreSQL && group.wordsAreSQL
            }
        }
        for (index, token) in code.enumerated() {
            if token.isSymbol("(") {
                stack.append(Open(index: index))
                continue
            }
            if token.isSymbol(")") {
                if let group = stack.popLast() { close(group) }
                continue
            }
            guard !stack.isEmpty else { continue }
            let top = stack.count - 1
            if token.isConstant {
                stack[top].sawValue = true
                if index + 2 < code.count, code[index + 1].isSymbol("="), code[index + 2].isConstant { stack[top].hasCondition = true }
            } else if case .word(let text) = token.kind {
                if index + 1 < code.count && code[index + 1].isSymbol("(") {
                    stack[top].sawValue = true
                } else if !(text.map(SQLScanner.expressionWords.contains) ?? false) {
                    stack[top].wordsAreSQL = false
                }
            } else if token.kind == .semicolon {
                stack[top].wordsAreSQL = false
            }
        }
        while let group = stack.popLast() { close(group) }
        self.flags = flags
    }

    /// Whether the group opening at token `open` reads as SQL.
    func looksLikeSQL(open: Int) -> Bool { flags.indices.contains(open) && flags[open] & Self.sqlLikeFlag != 0 }

    /// Whether two constants are compared at the top level of the group opening at token `open`.
    func hasConstantCondition(open: Int) -> Bool { flags.indices.contains(open) && flags[open] & Self.conditionFlag != 0 }
}

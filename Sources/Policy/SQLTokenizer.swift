/// A database whose reading of SQL text the checks know (`sql_dialects` in a policy).
public enum SQLDialect: String, Sendable, Hashable, CaseIterable {
    /// MySQL and MariaDB.
    case mysql
    /// PostgreSQL.
    case postgresql
    /// Microsoft SQL Server.
    case sqlServer = "sqlserver"
    /// SQLite.
    case sqlite
}

/// SQL text as tokens, the way a database reads it: comments are whitespace (they make no token; what the checks need
/// of them is kept as facts of the text), string literals and quoted identifiers are single tokens, `;` separates
/// statements. Never regular expressions over raw text.
///
/// Databases disagree on what quotes and comments are, and an attacker picks the reading that hides the payload, so the
/// tokenizer reads a text in one of several dialects and the callers try every one their databases need:
/// - `mysql`: a backslash escapes inside literals (and, read a second time, does not: the server's
///   `NO_BACKSLASH_ESCAPES` mode), `"…"` is a literal, `#` starts a comment, and the text of an executable comment
///   (`/*!50000 SLEEP(5)*/`) is code;
/// - `standard` (PostgreSQL): no backslash escapes (except in `E'…'`; and, read a second time, in every literal: the
///   server's `standard_conforming_strings = off`), `#` is an operator, `$tag$…$tag$` is a literal, and block comments
///   nest (`/* /* */ still a comment */`);
/// - `sqlServer`: `[…]` is an identifier, block comments nest;
/// - `sqlite`: `[…]` is an identifier, block comments do not nest, no dollar quotes.
struct SQLTokenizer {
    /// What a dialect treats specially.
    struct Dialect: Sendable {
        var backslashEscapes: Bool
        var hashComments: Bool
        var executableComments: Bool
        var dollarQuotes: Bool
        var doubleQuotedStrings: Bool
        var bracketIdentifiers = false
        /// Whether a `/*` inside a block comment opens a nested one (PostgreSQL, SQL Server), so that the comment ends
        /// only at the matching `*/`.
        var nestedComments = false
        /// Whether `U&"…"` is an identifier written with Unicode escapes (PostgreSQL: `U&"pg\005fsleep"` names
        /// `pg_sleep`, and `UESCAPE` may pick another escape character, after any comment).
        var unicodeEscapedIdentifiers = false
        /// Whether a table may be followed by a parenthesised list of table hints (SQL Server's older `t (NOLOCK)`).
        var tableHints = false

        static let mysql = Dialect(
            backslashEscapes: true, hashComments: true, executableComments: true, dollarQuotes: false, doubleQuotedStrings: true)
        static let standard = Dialect(
            backslashEscapes: false, hashComments: false, executableComments: false, dollarQuotes: true, doubleQuotedStrings: false,
            nestedComments: true, unicodeEscapedIdentifiers: true)
        static let sqlServer = Dialect(
            backslashEscapes: false, hashComments: false, executableComments: false, dollarQuotes: false, doubleQuotedStrings: false,
            bracketIdentifiers: true, nestedComments: true, tableHints: true)
        static let sqlite = Dialect(
            backslashEscapes: false, hashComments: false, executableComments: false, dollarQuotes: false, doubleQuotedStrings: false,
            bracketIdentifiers: true)
        /// MySQL in its `NO_BACKSLASH_ESCAPES` mode: a backslash is an ordinary character.
        static let mysqlWithoutBackslashEscapes = Dialect(
            backslashEscapes: false, hashComments: true, executableComments: true, dollarQuotes: false, doubleQuotedStrings: true)

        /// PostgreSQL with `standard_conforming_strings = off` (a server, database or role setting): a backslash escapes
        /// inside every literal.
        static let standardWithBackslashEscapes = Dialect(
            backslashEscapes: true, hashComments: false, executableComments: false, dollarQuotes: true, doubleQuotedStrings: false,
            nestedComments: true, unicodeEscapedIdentifiers: true)

        /// How `database` reads SQL text: MySQL and PostgreSQL in two ways each, since whether a backslash escapes in a
        /// literal is the server's setting (found by review: PostgreSQL read one way let
        /// `SELECT '\' || '; DELETE FROM t; SELECT 1 --\'` through, a DELETE to a server with the setting off).
        static func readings(of database: SQLDialect) -> [Dialect] {
            switch database {
            case .mysql: [mysql, mysqlWithoutBackslashEscapes]
            case .postgresql: [standard, standardWithBackslashEscapes]
            case .sqlServer: [sqlServer]
            case .sqlite: [sqlite]
            }
        }

        /// How each of `databases` reads SQL text.
        static func readings(of databases: [SQLDialect]) -> [Dialect] { databases.flatMap(readings(of:)) }

        /// Whether this dialect gives `text` the same tokens as `other`, and so does `text` behind any quote it
        /// holds (the spliced readings): every setting in which they differ needs a byte `text` does not hold. `E'`
        /// counts for backslash escapes (only without them is `E'…'` one literal), `--` for hash comments (MySQL wants
        /// a space after it), `/*` for nesting and executable comments, `&` for `U&"…"`. (`tableHints` changes no
        /// token.) Text with none of those bytes has one reading, not six.
        ///
        /// This holds while `tokens` is the only reader of a dialect's settings in `SQLScanner.finding`: a tokenizer
        /// branch that reads a setting needs the bytes that reach it in `TextFacts` (and its alphabet in
        /// `SQLReadingsTests`), and a check that reads one needs its own term here.
        func readsAlike(_ other: Dialect, _ text: TextFacts) -> Bool {
            (backslashEscapes == other.backslashEscapes || !text.backslashOrEscapeString)
                && (hashComments == other.hashComments || !text.hashOrDoubleDash)
                && (executableComments == other.executableComments || !text.blockComment)
                && (nestedComments == other.nestedComments || !text.blockComment)
                && (dollarQuotes == other.dollarQuotes || !text.dollar)
                && (doubleQuotedStrings == other.doubleQuotedStrings || !text.doubleQuote)
                && (bracketIdentifiers == other.bracketIdentifiers || !text.bracket)
                && (unicodeEscapedIdentifiers == other.unicodeEscapedIdentifiers || !text.ampersand)
        }

        /// The readings of `databases` that give `text` tokens no earlier one gives it.
        static func distinctReadings(of databases: [SQLDialect], for text: [UInt8]) -> [Dialect] {
            let facts = TextFacts(text)
            var distinct: [Dialect] = []
            for reading in readings(of: databases) where !distinct.contains(where: { $0.readsAlike(reading, facts) }) {
                distinct.append(reading)
            }
            return distinct
        }
    }

    /// Which of the bytes that dialects read differently a text holds.
    struct TextFacts {
        var backslashOrEscapeString = false
        var hashOrDoubleDash = false
        var blockComment = false
        var dollar = false
        var doubleQuote = false
        var bracket = false
        var ampersand = false

        init(_ text: [UInt8]) {
            var previous: UInt8 = 0
            for byte in text {
                switch byte {
                case UInt8(ascii: "\\"): backslashOrEscapeString = true
                case UInt8(ascii: "'") where previous | 0x20 == UInt8(ascii: "e"): backslashOrEscapeString = true
                case UInt8(ascii: "#"): hashOrDoubleDash = true
                case UInt8(ascii: "-") where previous == UInt8(ascii: "-"): hashOrDoubleDash = true
                case UInt8(ascii: "*") where previous == UInt8(ascii: "/"): blockComment = true
                case UInt8(ascii: "$"): dollar = true
                case UInt8(ascii: "\""): doubleQuote = true
                case UInt8(ascii: "["): bracket = true
                case UInt8(ascii: "&"): ampersand = true
                default: break
                }
                previous = byte
            }
        }
    }

    /// One token and where it is in the text.
    struct Token: Equatable {
        enum Kind: Equatable {
            /// An identifier or keyword, lower-cased when it is ASCII (keywords are); `nil` text for other words.
            case word(String?)
            case number
            /// A `'…'`, `E'…'` or `$tag$…$tag$` literal.
            case string
            /// A `"…"`, `` `…` `` or `[…]` identifier, with its text lower-cased when it is ASCII.
            case quotedIdentifier(String?)
            case semicolon
            case symbol(UInt8)
        }

        let kind: Kind
        /// Byte offsets of the token in the text.
        let start: Int
        let end: Int

        /// The keyword, if the token is an ASCII word.
        var word: String? {
            if case .word(let text) = kind { return text }
            return nil
        }

        /// The name the token gives, as a word or as a quoted identifier (`"pg_sleep"` names `pg_sleep`).
        var name: String? {
            switch kind {
            case .word(let text), .quotedIdentifier(let text): return text
            default: return nil
            }
        }

        /// Whether the token is a word or a quoted identifier, whether or not its text is ASCII (`name` is nil for one
        /// that is not).
        var isIdentifier: Bool {
            switch kind {
            case .word, .quotedIdentifier: true
            default: false
            }
        }

        var isQuotedIdentifier: Bool {
            if case .quotedIdentifier = kind { return true }
            return false
        }

        var isConstant: Bool {
            switch kind {
            case .number, .string: return true
            case .word(let text): return text == "true" || text == "false" || text == "null"
            default: return false
            }
        }

        func isSymbol(_ character: Unicode.Scalar) -> Bool { kind == .symbol(UInt8(character.value)) }
    }

    /// The tokens of a text.
    struct Result: Equatable {
        /// The tokens, comments left out (tokens on either side of one are not adjacent: `end` ≠ `start`).
        var tokens: [Token] = []
        /// Whether a comment follows a string literal directly (`admin'--`), and whether such a comment holds a `'`
        /// (left over from a literal the comment cut off: `… = 'admin'--'`).
        var commentAfterString = false
        var quoteInCommentAfterString = false
        /// Whether a literal, quoted identifier or comment is still open at the end.
        var unterminated = false
        /// Whether the text holds an identifier written with Unicode escapes (`U&"…"`), whose name the tokens do not
        /// give: the callers refuse it rather than decode escapes whose escape character a later `UESCAPE` can change.
        var unicodeEscapedIdentifier = false
    }

    /// The tokens of `bytes` in `dialect`.
    static func tokens(_ bytes: [UInt8], _ dialect: Dialect) -> Result {
        var result = Result()
        // Reserved once for as many tokens as the text can hold, so that the array is never copied to grow (4 MiB
        // of `a(` is 4 million tokens, and growing it doubling by doubling copied and faulted in most of the
        // decision's memory twice), and a long word, or a literal of words, reserves little.
        result.tokens.reserveCapacity(mostTokens(in: bytes))
        var index = 0
        var inExecutableComment = false
        var afterString = false
        func at(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
        func add(_ kind: Token.Kind, from start: Int) {
            result.tokens.append(Token(kind: kind, start: start, end: index))
            afterString = kind == .string
        }
        /// A comment from `start` to `index`: no token, only what the checks ask of it.
        func comment(from start: Int) {
            if afterString {
                result.commentAfterString = true
                if bytes[start..<index].contains(UInt8(ascii: "'")) { result.quoteInCommentAfterString = true }
            }
            afterString = false
        }
        /// The text between the quotes of the identifier that started at `start` (lower-cased ASCII); one left open at
        /// the end of the text is named by all it holds (a value spliced into `"…"` ends in an open one: `x" OR "a"="a`
        /// compares `a` with `a`).
        func identifier(_ start: Int, closed: Bool) -> String? {
            let end = closed ? index - 1 : index
            guard end > start, index <= bytes.count else { return nil }
            let inner = bytes[(start + 1)..<end]
            guard inner.allSatisfy({ $0 < 0x80 }) else { return nil }
            return asciiLowercased(inner)
        }
        /// Skips a quoted run that started at `index` (the opening quote) and ends with `close`; false when the text
        /// ends first.
        @discardableResult
        func skipQuoted(close: UInt8, escapes: Bool) -> Bool {
            index += 1
            while index < bytes.count {
                let byte = bytes[index]
                if escapes && byte == UInt8(ascii: "\\") {
                    index += 2
                    continue
                }
                if byte == close {
                    if at(1) == close {  // a doubled quote stands for itself
                        index += 2
                        continue
                    }
                    index += 1
                    return true
                }
                index += 1
            }
            index = bytes.count
            result.unterminated = true
            return false
        }
        while index < bytes.count {
            let start = index
            let byte = bytes[index]
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C:
                index += 1
            // MySQL needs whitespace (or a control character) after `--`; `1--1` is 1 minus minus 1 there.
            case UInt8(ascii: "-") where at(1) == UInt8(ascii: "-") && (!dialect.hashComments || (at(2).map { $0 <= 0x20 } ?? true)):
                // A line comment ends at LF or CR (PostgreSQL ends it at either).
                while index < bytes.count && bytes[index] != 0x0A && bytes[index] != 0x0D { index += 1 }
                comment(from: start)
            case UInt8(ascii: "#") where dialect.hashComments:
                while index < bytes.count && bytes[index] != 0x0A && bytes[index] != 0x0D { index += 1 }
                comment(from: start)
            case UInt8(ascii: "/") where at(1) == UInt8(ascii: "*"):
                if dialect.executableComments
                    && (at(2) == UInt8(ascii: "!") || (at(2) == UInt8(ascii: "M") && at(3) == UInt8(ascii: "!")))
                {
                    // MySQL runs what is inside /*! … */, MariaDB also /*M! … */ (after an optional version): code.
                    index += at(2) == UInt8(ascii: "!") ? 3 : 4
                    while index < bytes.count && bytes[index] >= UInt8(ascii: "0") && bytes[index] <= UInt8(ascii: "9") { index += 1 }
                    inExecutableComment = true
                    continue
                }
                index += 2
                var depth = 1
                while index + 1 < bytes.count {
                    if bytes[index] == UInt8(ascii: "*") && bytes[index + 1] == UInt8(ascii: "/") {
                        index += 2
                        depth -= 1
                        if depth == 0 { break }
                    } else if dialect.nestedComments && bytes[index] == UInt8(ascii: "/") && bytes[index + 1] == UInt8(ascii: "*") {
                        index += 2
                        depth += 1
                    } else {
                        index += 1
                    }
                }
                if depth > 0 {
                    index = bytes.count
                    result.unterminated = true
                }
                comment(from: start)
            case UInt8(ascii: "*") where inExecutableComment && at(1) == UInt8(ascii: "/"):
                index += 2
                inExecutableComment = false
            case UInt8(ascii: "'"):
                skipQuoted(close: byte, escapes: dialect.backslashEscapes)
                add(.string, from: start)
            case UInt8(ascii: "e") where !dialect.backslashEscapes && at(1) == UInt8(ascii: "'"),
                UInt8(ascii: "E") where !dialect.backslashEscapes && at(1) == UInt8(ascii: "'"):
                index += 1
                skipQuoted(close: UInt8(ascii: "'"), escapes: true)  // PostgreSQL E'…' escapes with backslashes
                add(.string, from: start)
            case UInt8(ascii: "\""):
                let closed = skipQuoted(close: byte, escapes: dialect.backslashEscapes)
                add(dialect.doubleQuotedStrings ? .string : .quotedIdentifier(identifier(start, closed: closed)), from: start)
            case UInt8(ascii: "`"):
                let closed = skipQuoted(close: byte, escapes: false)
                add(.quotedIdentifier(identifier(start, closed: closed)), from: start)
            case UInt8(ascii: "[") where dialect.bracketIdentifiers:
                let closed = skipQuoted(close: UInt8(ascii: "]"), escapes: false)
                add(.quotedIdentifier(identifier(start, closed: closed)), from: start)
            case UInt8(ascii: "$") where dialect.dollarQuotes:
                if let tagEnd = dollarTagEnd(bytes, from: index) {
                    let tag = bytes[index...tagEnd]
                    index = tagEnd + 1
                    while index < bytes.count && !bytes[index...].starts(with: tag) { index += 1 }
                    if index >= bytes.count {
                        result.unterminated = true
                    } else {
                        index += tag.count
                    }
                    add(.string, from: start)
                } else {
                    index += 1
                    add(.symbol(byte), from: start)
                }
            case UInt8(ascii: ";"):
                index += 1
                add(.semicolon, from: start)
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                while index < bytes.count && (isWordByte(bytes[index]) || bytes[index] == UInt8(ascii: ".")) { index += 1 }
                add(.number, from: start)
            default:
                if isWordByte(byte) {
                    var ascii = true
                    while index < bytes.count && isWordByte(bytes[index]) {
                        if bytes[index] >= 0x80 { ascii = false }
                        index += 1
                    }
                    add(.word(ascii ? asciiLowercased(bytes[start..<index]) : nil), from: start)
                    if dialect.unicodeEscapedIdentifiers, index - start == 1, byte | 0x20 == UInt8(ascii: "u"),
                        at(0) == UInt8(ascii: "&"), at(1) == UInt8(ascii: "\"")
                    {
                        result.unicodeEscapedIdentifier = true
                    }
                } else {
                    index += 1
                    add(.symbol(byte), from: start)
                }
            }
        }
        if inExecutableComment { result.unterminated = true }
        return result
    }

    /// At most how many tokens `bytes` makes in any dialect: a token per run of word bytes and per other byte that is
    /// not a space (a token begins at one of those: literals, comments and quoted identifiers make fewer). `$` counts
    /// apart: at the start of a token it can be a symbol before a word (`$1`, `$x` without a closing tag).
    static func mostTokens(in bytes: [UInt8]) -> Int {
        var count = 0
        var inWord = false
        for byte in bytes {
            let word = isWordByte(byte) && byte != UInt8(ascii: "$")
            if word ? !inWord : !(byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)) { count += 1 }
            inWord = word
        }
        return count
    }

    /// ASCII `bytes` lower-cased, as a string (one pass; `String.lowercased()` made a second string of every word).
    private static func asciiLowercased(_ bytes: ArraySlice<UInt8>) -> String {
        String(unsafeUninitializedCapacity: bytes.count) { buffer in
            for (offset, byte) in bytes.enumerated() {
                buffer[offset] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
            }
            return bytes.count
        }
    }

    static func isWordByte(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F
            || byte == 0x24 || byte >= 0x80
    }

    /// The index of the closing `$` of a dollar-quote tag (`$$`, `$tag$`) starting at `start`, if one starts there.
    private static func dollarTagEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        var index = start + 1
        if index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { return nil }  // $1
        // PostgreSQL tags are identifiers (at most 63 bytes); a longer run is no tag, and matching it would be slow.
        while index < bytes.count, bytes[index] != UInt8(ascii: "$") {
            guard isWordByte(bytes[index]), index - start <= 64 else { return nil }
            index += 1
        }
        return index < bytes.count ? index : nil
    }
}

/// The `shell_metacharacters` detector, on a POSIX shell lexer rather than a character list: quoting and backslash
/// escapes are read the way `sh` reads them, so an operator counts only where a shell would act on it.
///
/// A tool may splice a value into a command bare, inside `'…'` or inside `"…"`, and the detector cannot know which. The
/// value is therefore lexed from each of the three starting states, and anything a shell would act on in any of them is
/// a finding: `'; reboot; '` is harmless bare but closes a single-quoted context, and `$(id)` is live bare and inside
/// double quotes. What is reported:
///
/// - command separators and operators: `;`, `&`, `|`, newline and carriage return;
/// - redirections and process substitution: `<`, `>`;
/// - command substitution: `` ` `` and `$(`, zsh's process substitution `=(` at the start of a word, and zsh's glob
///   qualifiers: a `(` in a word after an unquoted `*`, `?` or `[` (`*.txt(e:cmd:)` runs `cmd`);
/// - arithmetic expansion `$[` (bash and zsh; `$((` is a `$(`);
/// - parameter expansion: `${`, `$NAME`, and the special parameters `$?`, `$$`, `$!`, `$#`, `$*`, `$@`, `$-` (positional
///   `$1` is not reported: it would make every price a finding, and it expands to text, never to a command);
/// - ANSI-C quoting `$'…'`, which spells any byte (`$'\x3b'`) and exists to hide characters;
/// - a comment: `#` at the start of a word (the value's start, read bare, or after an unquoted blank), which makes the
///   shell ignore the rest of the line (the options and pipes a tool puts after the value);
/// - NUL, in any state.
///
/// A character escaped for the state it is read in (`\;` bare, `\$` inside double quotes) is literal to the shell in
/// every starting state where it is escaped, and is not reported. The work is linear: three passes over the bytes.
enum ShellScanner {
    /// Where in a command line the value is assumed to start.
    enum Context: CaseIterable {
        case bare
        case singleQuoted
        case doubleQuoted

        var description: String {
            switch self {
            case .bare: "unquoted"
            case .singleQuoted: "spliced into '…'"
            case .doubleQuoted: "spliced into \"…\""
            }
        }
    }

    /// What a shell would act on in `text`, or nil.
    static func finding(in text: String) -> String? {
        let bytes = Array(text.utf8)
        for context in Context.allCases {
            if let found = finding(in: bytes, from: context) { return found }
        }
        return nil
    }

    /// The first thing a shell would act on when `bytes` are read starting in `context`.
    static func finding(in bytes: [UInt8], from context: Context) -> String? {
        var state = context
        var index = 0
        // Whether the byte at `index` starts a word (a `#` there starts a comment).
        var atWordStart = context == .bare
        var wordHasGlob = false
        func at(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
        func found(_ what: String) -> String {
            context == .bare ? what : "\(what) (\(context.description))"
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 0 { return found("NUL byte") }
            switch state {
            case .singleQuoted:
                // Nothing is special inside '…' except the quote that ends it.
                if byte == UInt8(ascii: "'") { state = .bare }
                index += 1
            case .doubleQuoted:
                switch byte {
                case UInt8(ascii: "\\"):
                    // Inside "…" a backslash escapes only $ ` " \ and newline; before anything else it is literal.
                    index += [UInt8(ascii: "$"), UInt8(ascii: "`"), UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x0A].contains(at(1)) ? 2 : 1
                    continue
                case UInt8(ascii: "\""):
                    state = .bare
                case UInt8(ascii: "`"):
                    return found("command substitution '`'")
                case UInt8(ascii: "$"):
                    if let expansion = expansion(after: at(1), quoted: true) { return found(expansion) }
                default: break
                }
                index += 1
            case .bare:
                let startsWord = atWordStart
                atWordStart = byte == 0x20 || byte == 0x09
                // Whether the word so far has an unquoted glob character: zsh reads a `(` after it as glob qualifiers
                // (`*.txt(e:cmd:)`; found by review: only a `(` right after one was caught).
                if startsWord { wordHasGlob = false }
                switch byte {
                case UInt8(ascii: "\\"):
                    index += 2  // escapes the next byte (an escaped newline joins lines)
                    continue
                case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["): wordHasGlob = true
                case UInt8(ascii: "#") where startsWord: return found("comment '#'")
                // zsh runs `=(cmd)` at the start of a word and passes a file holding its output (found by review).
                case UInt8(ascii: "=") where startsWord && at(1) == UInt8(ascii: "("): return found("process substitution '=(' (zsh)")
                // zsh reads `(…)` after a pattern as glob qualifiers, and `e:…:` and `+name` among them run code for each
                // file the pattern matches (`*(e:reboot:)`; found by review).
                case UInt8(ascii: "(") where wordHasGlob:
                    return found("glob qualifiers '(' after a pattern (zsh)")
                case UInt8(ascii: "'"): state = .singleQuoted
                case UInt8(ascii: "\""): state = .doubleQuoted
                case UInt8(ascii: ";"): return found("command separator ';'")
                case UInt8(ascii: "&"): return found("operator '&'")
                case UInt8(ascii: "|"): return found("pipe '|'")
                case UInt8(ascii: "<"), UInt8(ascii: ">"): return found("redirection '\(Character(Unicode.Scalar(byte)))'")
                case 0x0A: return found("command separator '\\n'")
                case 0x0D: return found("carriage return")
                case UInt8(ascii: "`"): return found("command substitution '`'")
                case UInt8(ascii: "$"):
                    if let expansion = expansion(after: at(1), quoted: false) { return found(expansion) }
                default: break
                }
                index += 1
            }
        }
        return nil
    }

    /// What `$` followed by `next` expands to, if anything.
    private static func expansion(after next: UInt8?, quoted: Bool) -> String? {
        guard let next else { return nil }
        switch next {
        case UInt8(ascii: "("): return "command substitution '$('"
        case UInt8(ascii: "{"): return "parameter expansion '${'"
        case UInt8(ascii: "["): return "arithmetic expansion '$[' (bash, zsh)"
        case UInt8(ascii: "'") where !quoted: return "ANSI-C quoting \"$'\""
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "_"):
            return "parameter expansion '$\(Character(Unicode.Scalar(next)))'"
        case UInt8(ascii: "?"), UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "*"), UInt8(ascii: "@"),
            UInt8(ascii: "-"):
            return "special parameter '$\(Character(Unicode.Scalar(next)))'"
        default: return nil
        }
    }
}

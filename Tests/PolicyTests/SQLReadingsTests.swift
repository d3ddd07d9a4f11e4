import Foundation
import Testing

@testable import Policy

/// `SQLScanner.finding` reads a value once per distinct reading: a dialect whose settings differ from an earlier one's
/// only where the text holds none of the bytes those settings concern gives the same tokens, so it is skipped.
@Suite("SQL readings that give a text the same tokens are read once")
struct SQLReadingsTests {
    static let dialects: [SQLTokenizer.Dialect] = SQLTokenizer.Dialect.readings(of: SQLDialect.allCases)

    /// Random texts from an alphabet of every byte and pair the dialects read differently: wherever `readsAlike` calls
    /// two dialects alike, their tokens are equal, as they are behind each quote (the spliced readings).
    @Test func alikeReadingsGiveEqualTokens() {
        let alphabet = [
            "a", "e", "E", "u", "U", "&", "'", "\"", "`", "\\", "#", "-", "--", "-- ", "/", "*", "/*", "*/", "/*!", "$", "$$",
            "$t$", "[", "]", " ", "\n", ";", "(", ")", "1", "select", "x", "M", "!", "/*M!", "/*!5", "--\u{1}", "$1", "E'\\",
            "U&\"", "é", "\r",
        ]
        var generator = SplitMix(seed: 20_261_129)
        var alikePairs = 0
        for _ in 0..<3000 {
            let text = Array(
                (0..<Int.random(in: 1...14, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined().utf8)
            let facts = SQLTokenizer.TextFacts(text)
            // The reservation bound holds in every reading (it is what keeps the token array from growing).
            for dialect in Self.dialects {
                #expect(
                    SQLTokenizer.tokens(text, dialect).tokens.count <= SQLTokenizer.mostTokens(in: text),
                    "\(String(decoding: text, as: UTF8.self))")
            }
            for (first, one) in Self.dialects.enumerated() {
                for other in Self.dialects[(first + 1)...] where one.readsAlike(other, facts) {
                    alikePairs += 1
                    // A value is spliced behind each quote it holds.
                    for prefix in [[], [UInt8(ascii: "'")], [UInt8(ascii: "\"")], [UInt8(ascii: "`")]]
                    where prefix.allSatisfy(text.contains) {
                        // Everything `check` reads: tokens, open literals, `U&"`, comments after literals.
                        #expect(
                            SQLTokenizer.tokens(prefix + text, one) == SQLTokenizer.tokens(prefix + text, other),
                            "\(String(decoding: prefix + text, as: UTF8.self))")
                    }
                }
            }
        }
        #expect(alikePairs > 1000)
    }

    @Test("text without the bytes the settings concern has one reading; those bytes bring the readings back")
    func distinctReadings() {
        func count(_ text: String) -> Int { SQLTokenizer.Dialect.distinctReadings(of: SQLDialect.allCases, for: Array(text.utf8)).count }
        #expect(count("a(a(a(") == 1)
        #expect(count("O'Brien's order 1 OR 1=1") == 1)
        #expect(count("x\\' or 1=1") == 2)  // with and without backslash escapes
        #expect(count("x' /* c */ --1") == 3)  // MySQL's comments, nested ones, flat ones
        #expect(count("\\ $ [ & /* \" #") == 6)
        #expect(SQLTokenizer.Dialect.distinctReadings(of: [.sqlite], for: Array("a".utf8)).count == 1)
    }

    /// What a skipped reading would find, an earlier one finds: findings are unchanged.
    @Test(
        arguments: [
            "1 OR 1=1", "x' OR '1'='1", "x\" OR \"a\"=\"a", "1; DROP TABLE users", "a' UNION SELECT password FROM users--",
            "x' AND SLEEP(5)--", "$$ ; DROP TABLE t; $$", "[x] ; DELETE FROM t", "U&\"pg\\005fsleep\"(5)", "x'/*!50000 SLEEP(5)*/--",
        ])
    func findingsUnchanged(value: String) {
        #expect(SQLScanner.finding(in: value) != nil, "\(value)")
    }

    /// `check` compares a word with its own list only when `mayBeComparedWord` lets it: every word it compares must
    /// pass, or that comparison would never run. Read from the source, so that a word added there is covered.
    @Test func everyComparedWordPassesTheGate() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/Policy/SQLScanner.swift")
        let source = try String(contentsOf: file, encoding: .utf8)
        let start = try #require(source.range(of: "let compared = mayBeComparedWord(text)"))
        let end = try #require(source.range(of: "// `&&` and `||` are AND and OR in MySQL.", range: start.upperBound..<source.endIndex))
        let loop = source[start.upperBound..<end.lowerBound]
        var words = Set(loop.matches(of: #/text == "([a-z_]+)"/#).map { String($0.output.1) })
        for list in loop.matches(of: #/\[((?:"[a-z_]+", )*"[a-z_]+")\]\.contains\(text\)/#) {
            words.formUnion(list.output.1.matches(of: #/"([a-z_]+)"/#).map { String($0.output.1) })
        }
        #expect(words.count >= 18, "\(words.sorted())")
        #expect(words.filter { !SQLScanner.mayBeComparedWord($0) }.isEmpty)
        #expect(!SQLScanner.mayBeComparedWord("a") && !SQLScanner.mayBeComparedWord("select") && !SQLScanner.mayBeComparedWord("ａｎｄ"))
    }
}

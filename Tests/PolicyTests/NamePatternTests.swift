import Policy
import Testing

@Suite("Name patterns")
struct NamePatternTests {
    @Test(
        "matches",
        arguments: [
            ("read_file", "read_file", true), ("read_file", "read_files", false), ("read_file", "Read_file", false),
            ("write_*", "write_file", true), ("write_*", "write_", true), ("write_*", "rewrite_file", false),
            ("*_file", "delete_file", true), ("*", "", true), ("*", "anything", true),
            ("exec_???", "exec_sql", true), ("exec_???", "exec_sq", false), ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYcZ", false), ("a*b*c", "abc", true), (#"literal\*"#, "literal*", true),
            (#"literal\*"#, "literalX", false), ("db.*.read", "db.users.read", true),
            // Scalars of several bytes, walked where they lie; a glob compares scalars (no canonical equivalence).
            ("r\u{E9}*\u{1F600}?x", "r\u{E9}sum\u{E9}\u{1F600}\u{4E00}x", true), ("*\u{E9}", "caf\u{E9}", true),
            ("*\u{E9}", "cafe\u{301}", false), ("\u{4E00}*\u{4E00}*\u{4E00}", "\u{4E00}a\u{4E00}\u{4E00}b", false),
        ])
    func matching(pattern: String, name: String, expected: Bool) throws {
        let compiled = try #require(NamePattern(pattern))
        #expect(compiled.matches(name) == expected)
    }

    @Test("literal prefixes and exactness, for indexing")
    func prefix() throws {
        #expect(try #require(NamePattern("write_*")).literalPrefix == "write_")
        #expect(try #require(NamePattern("write_*")).isExact == false)
        #expect(try #require(NamePattern("read_file")).isExact)
        #expect(try #require(NamePattern("*x")).literalPrefix == "")
    }

    @Test("empty patterns and a dangling escape are refused")
    func invalid() {
        #expect(NamePattern("") == nil)
        #expect(NamePattern("abc\\") == nil)
    }

    @Test("a hostile pattern against a long name finishes quickly (no exponential backtracking)")
    func hostile() throws {
        let pattern = try #require(NamePattern(String(repeating: "a*", count: 50) + "b"))
        #expect(pattern.matches(String(repeating: "a", count: 10_000)) == false)
    }
}

@Suite("Tool rules found by their prefix")
struct ToolPrefixIndexTests {
    @Test("a combining mark after a deny rule's prefix does not hide the tool from it")
    func combiningMarkAfterPrefix() throws {
        let set = try PolicyFixtures.set(
            #"{"name":"p","default_action":"deny","rules":[{"id":"ALL","action":"allow","tools":["*"]},{"id":"DEL","action":"deny","tools":["delete_*"]}]}"#
        )
        for tool in ["delete_\u{0301}x", "delete_x", "delete_\u{200D}", "delete_"] {
            let decision = set.evaluate(try PolicyFixtures.call(tool, "{}"))
            #expect(
                decision.outcome == .deny && decision.rule == "DEL",
                "\(tool.unicodeScalars.map { String($0.value, radix: 16) }): \(decision.rule)")
        }
        #expect(set.evaluate(try PolicyFixtures.call("read_file", "{}")).outcome == .allow)
    }
}

import Policy
import StrictJSON
import Testing

@Suite("Linear-time regular expressions")
struct LinearRegexTests {
    @Test(
        "matching",
        arguments: [
            ("abc", "xxabcxx", true), ("^abc", "xabc", false), ("abc$", "abcx", false), ("^a.c$", "abc", true),
            ("a|b", "b", true), ("(ab)+c", "ababc", true), ("colou?r", "color", true), ("\\d{3}-\\d{4}", "555-1234", true),
            ("\\d{3}-\\d{4}", "55-1234", false), ("[a-c]+x", "bbx", true), ("[^a-c]x", "ax", false), ("[^a-c]x", "dx", true),
            ("(?i)union\\s+select", "UNION   SELECT", true), ("(?i)[A-Z]+", "abc", true), ("\\.\\.", "a..b", true),
            ("x{2,3}", "xx", true), ("^x{2,3}$", "xxxx", false), ("^(a|ab)(c|bcd)$", "abcd", true), ("(?:ab)*$", "", true),
            ("\\s", "a b", true), ("\\W", "abc", false), ("[\\d.]+", "1.2", true), ("a[-]b", "a-b", true),
        ])
    func matching(pattern: String, text: String, expected: Bool) throws {
        #expect(try LinearRegex(pattern).matches(text) == expected, "\(pattern) ~ \(text)")
    }

    @Test(
        "unsupported or malformed patterns are refused",
        arguments: [
            "(a", "a)", "*a", "a{2,1}", "(?=a)", "(a)\\1", "[a", "a{99999}", "\\q", "\\b",
        ])
    func refused(pattern: String) {
        #expect(throws: RegexError.self) { try LinearRegex(pattern) }
    }

    @Test("catastrophic-backtracking patterns finish in linear time")
    func redos() throws {
        let evil = try LinearRegex("^(a+)+$")
        #expect(evil.matches(String(repeating: "a", count: 5_000) + "!") == false)
        let nested = try LinearRegex("(a|aa)*b")
        #expect(nested.matches(String(repeating: "a", count: 5_000)) == false)
    }

    @Test("a search that would keep thousands of threads alive over a long value is given up, and the value refused")
    func stepBudget() throws {
        let wide = try LinearRegex("[a-z0-9]{1000}Q")
        let value = String(repeating: "a", count: 64 * 1024)
        #expect(wide.search(value) == .tooCostly)
        #expect(wide.search(String(repeating: "a", count: 1000) + "Q") == .matched)
        // Ordinary patterns over large values stay within the budget.
        #expect(try LinearRegex("(?i)^\\s*select\\s").search(String(repeating: "x", count: 1 << 20)) == .notMatched)
        #expect(try LinearRegex("\\d{1,3}(\\.\\d{1,3}){3}").search(String(repeating: "1234.", count: 1 << 16)) == .notMatched)
        // Splits and jumps count as steps: 9,000 empty alternatives walked at every position while two threads live
        // were charged as two (found by review: a billion steps over 64 KiB, charged as 130,000).
        let empty = try LinearRegex("(?:(?:|){1000}){9}x")
        #expect(empty.search(String(repeating: "a", count: 4 * 1024)) == .tooCostly)
        #expect(empty.search("x") == .matched)
        // Searches of empty values are charged too (their whole work is the first closure, and filling the marks):
        // 10,000 empty values sharing one call's budget cost 200 million steps uncharged (found by review).
        var shared = LinearRegex.stepBudget(forScalars: 0)
        var outcome = LinearRegex.Outcome.notMatched
        for _ in 0..<10_000 where outcome == .notMatched { outcome = empty.search("", steps: &shared) }
        #expect(outcome == .tooCostly)
        // An alternation of words (a deny list) visits about two instructions per live thread, and still searches a
        // 256 KiB value to its end.
        let words = try LinearRegex(
            "(?i)(ignore|disregard|override|bypass|jailbreak|exfiltrate|sudo|chmod|passwd|shadow|token|secret|apikey|credential|privilege)")
        #expect(words.search(String(repeating: "the quick brown fox jumps over the lazy dog ", count: 6_000)) == .notMatched)
        // Either way round, a value too long to search is refused.
        for field in ["deny", "allow"] {
            let set = try PolicyFixtures.set(
                #"{"name":"r","default_action":"deny","rules":[{"id":"R","action":"allow","tools":["t"],"args":{"q":{"\#(field)":["[a-z0-9]{1000}Q"]}}}]}"#
            )
            let call = PolicyRequest(
                tenant: "acme", agent: "bot1", target: "t", arguments: .object(JSONObject([.init(key: "q", value: .string(value))])))
            let decision = set.evaluate(call)
            #expect(decision.outcome == .deny && decision.reason.contains("too long to search"), "\(field): \(decision.reason)")
            // The same bytes split over many leaves share one budget: splitting does not multiply the work.
            let split = PolicyRequest(
                tenant: "acme", agent: "bot1", target: "t",
                arguments: .object(
                    JSONObject([
                        .init(key: "q", value: .array(Array(repeating: .string(String(repeating: "a", count: 1000)), count: 60)))
                    ])))
            let splitDecision = set.evaluate(split)
            // (An allow pattern refuses the first piece as unmatched already.)
            #expect(
                splitDecision.outcome == .deny && (field == "allow" || splitDecision.reason.contains("too long to search")),
                "\(field): \(splitDecision.reason)")
        }
    }
}

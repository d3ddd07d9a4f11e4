import Foundation
import Policy
import StrictJSON

/// Decision time for 4 MiB adversarial arguments against a rule that applies every argument check to every value:
/// each case is parsed once and decided several times; the report gives the slowest decision of each case, the
/// slowest of all, and each case's time per MiB against plain ASCII text measured in the same run (linear work keeps
/// those ratios small and independent of size).
enum WorstCaseBenchmark {
    /// A rule that canonicalises every value and runs every detector and constraint on it.
    static let policy = #"""
        {"name":"worst","default_action":"deny","rules":[
          {"id":"ALL","action":"allow","tools":["t"],"arg_deny":{"*":[".."]},
           "args":{"*":{"detectors":["path_traversal","sql_injection","shell_metacharacters"],
                        "path":{"allow_absolute":false,"allow_traversal":false,"allowed_prefixes":["data"]},
                        "deny":["(?i)(etc|root)/(passwd|shadow)","a+b+c+d"],"allow":["^[^<>]*$"],
                        "max_length":100000000,"max_bytes":100000000}}}]}
        """#

    static let size = 4 * 1024 * 1024

    static func run(repetitions: Int, only filter: String? = nil) throws {
        let document = try PolicyDocument.parse(Array(policy.utf8), file: "worst.json", defaultName: "worst")
        let snapshot = PolicySnapshot(tenantDocuments: ["w": [document]], globalDocuments: [], directory: "")
        emit("4 MiB adversarial arguments; every check on every value; slowest of \(repetitions) decisions per case\n")
        emit("| case | JSON bytes | parse ms | slowest decision ms | ms per MiB vs plain ASCII | decision |")
        emit("|---|---|---|---|---|---|")
        var plainPerMiB = 0.0
        var slowest = (name: "", milliseconds: 0.0)
        for (name, json) in cases() where filter.map({ name.contains($0) }) ?? true {
            let bytes = Array(json.utf8)
            let parseStart = ContinuousClock.now
            let arguments: JSONValue
            do {
                arguments = try JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 64, maximumBytes: 8 * size))
            } catch {
                // Refused by the parser (a body the gateway answers with 400 before any decision).
                let parse = milliseconds(ContinuousClock.now - parseStart)
                emit("| \(name) | \(bytes.count) | \(String(format: "%.1f", parse)) | — | — | refused at parse: \(error.reason) |")
                continue
            }
            let parse = milliseconds(ContinuousClock.now - parseStart)
            let request = PolicyRequest(tenant: "w", agent: "a", target: "t", arguments: arguments)
            var worst = 0.0
            var decision = snapshot.evaluate(request)
            for _ in 0..<repetitions {
                let start = ContinuousClock.now
                decision = snapshot.evaluate(request)
                worst = max(worst, milliseconds(ContinuousClock.now - start))
            }
            let perMiB = worst / (Double(bytes.count) / 1_048_576)
            if plainPerMiB == 0 { plainPerMiB = perMiB }
            if worst > slowest.milliseconds { slowest = (name, worst) }
            let reason = decision.reason.count > 90 ? String(decision.reason.prefix(90)) + "…" : decision.reason
            emit(
                "| \(name) | \(bytes.count) | \(String(format: "%.1f", parse)) | \(String(format: "%.1f", worst)) | "
                    + "\(String(format: "%.2f", perMiB / plainPerMiB))× | \(decision.outcome.name): \(reason.replacingOccurrences(of: "|", with: "\\|")) |"
            )
        }
        emit("\nslowest decision: \(String(format: "%.1f", slowest.milliseconds)) ms (\(slowest.name))")
    }

    /// The adversarial argument sets, each about 4 MiB of JSON.
    static func cases() -> [(String, String)] {
        func one(_ value: String) -> String { #"{"v":"\#(value)"}"# }
        func repeated(_ unit: String, bytes: Int = size) -> String {
            String(repeating: unit, count: max(1, bytes / max(1, unit.utf8.count)))
        }
        let leafCount = 4_999  // and as many keys: 9,998 leaves
        let leaf = repeated("ab/c ", bytes: size / leafCount)
        let manyLeaves = "{" + (0..<leafCount).map { #""k\#($0)":"\#(leaf)""# }.joined(separator: ",") + "}"
        let tooMany = "[" + Array(repeating: "1", count: 20_000).joined(separator: ",") + "]"
        // 64 strings, each holding 60 KiB of JSON nested 15 deep (the leaves of all but the first few exceed the bound).
        let innerUnit = String(repeating: "[", count: 15) + #""..\\u002e/x""# + String(repeating: "]", count: 15)
        let inner = "[" + Array(repeating: innerUnit, count: 60 * 1024 / innerUnit.utf8.count).joined(separator: ",") + "]"
        let innerEscaped = inner.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        let nested = "[" + Array(repeating: "\"\(innerEscaped)\"", count: 64).joined(separator: ",") + "]"
        let fullwidthKeys = "{" + (0..<4_000).map { #""\#(String(repeating: "ｋ", count: 340))\#($0)":1"# }.joined(separator: ",") + "}"
        return [
            ("plain ASCII (reference)", one(repeated("abcdefgh"))),
            ("`../` repeated", one(repeated("../"))),
            ("U+FDFA (NFKC ×18)", one(repeated("\u{FDFA}"))),
            ("%25 nested 8 deep around `.`", one(repeated("%2525252525252525" + "2e"))),
            ("percent-encoded overlong `%c0%af`", one(repeated("%c0%af"))),
            ("combining marks of alternating class", one("a" + repeated("\u{0316}\u{0301}"))),
            ("combining mark after every slash", one(repeated("/\u{0301}"))),
            ("decomposed accents (e + U+0301)", one(repeated("e\u{0301}"))),
            ("Hangul jamo (U+1100 U+1161)", one(repeated("\u{1100}\u{1161}"))),
            ("Hangul vowels and marks (U+1161 U+0344)", one(repeated("\u{1161}\u{0344}"))),
            ("fullwidth text", one(repeated("ａ．／"))),
            ("4,999 keys and values of 840 bytes", manyLeaves),
            ("20,000 leaves", tooMany),
            ("64 strings of nested JSON, 60 KiB and 15 deep each", #"{"v":\#(nested)}"#),
            ("4,000 fullwidth keys", fullwidthKeys),
            ("SQL: unterminated comment", one("select 1 /*" + repeated("x "))),
            ("SQL: quote, then 4 MiB", one("'" + repeated("a or "))),
            ("SQL: UNION SELECT repeated", one(repeated("1 union select "))),
            ("SQL: semicolons", one(repeated(";"))),
            ("SQL: NOT repeated", one(repeated("x or not "))),
            ("SQL: calls nested without end", one(repeated("a("))),
            // The bytes every dialect setting concerns, each closed again, first: the value has six distinct readings.
            ("SQL: calls nested, read six ways", one(#"\\ #\n /**/ $1 [x] & \"x\" "# + repeated("a("))),
            ("SQL: dollar tag", one("$" + repeated("t") + "$x")),
            ("shell: alternating quotes", one(repeated("'\\\"$"))),
            ("regex: near-misses of a+b+c+d", one(repeated("aaaabbbbcccc"))),
            ("path: one-letter segments", one(repeated("a/"))),
            ("path: format characters in one segment", one("data/a" + repeated("\u{200B}") + "b")),
        ]
    }

    /// Writes a line at once (stdout to a pipe is block-buffered, and a slow case must not hide the ones before it).
    static func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) / 1e15
    }
}

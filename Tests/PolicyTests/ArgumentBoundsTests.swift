import StrictJSON
import Testing

@testable import Policy

/// Bounds on what examining a call's arguments costs, whatever their shape.
@Suite("Argument examination bounds")
struct ArgumentBoundsTests {
    /// Found by review: every leaf held its whole path as its location, so one long key over many array elements
    /// multiplied: a 4 MB key over 10,000 elements made 40 GB of locations. A location names a leaf only in reasons and
    /// findings, and is cut at 512 bytes.
    @Test func locationsAreBounded() throws {
        let key = String(repeating: "k", count: 100_000)
        let arguments = try JSONParser.parse(#"{"\#(key)":[\#(Array(repeating: "0", count: 5_000).joined(separator: ","))],"b":{"c":1}}"#)
        let leaves = try #require(ArgumentCanonicalizer.leaves(of: arguments))
        #expect(leaves.count == 5_004)
        #expect(leaves.allSatisfy { $0.location.utf8.count <= ArgumentCanonicalizer.maximumLocationBytes })
        #expect(leaves[0].location.hasPrefix("kkk") && leaves[0].location.hasSuffix("…"))
        // Short paths are whole, and rules still match on the keys, not the location.
        #expect(leaves.contains { $0.location == "b.c" && $0.keys == ["b", "c"] })
        #expect(leaves.filter { $0.keys.first == key }.count == 5_000)
        // Cut between scalars, never inside one.
        let wide = String(repeating: "é", count: 400)
        #expect(ArgumentCanonicalizer.located("", "", wide).utf8.count <= ArgumentCanonicalizer.maximumLocationBytes)
        #expect(ArgumentCanonicalizer.located("", "", wide).unicodeScalars.allSatisfy { $0 == "é" || $0 == "…" })
    }

    /// JSON inside a string argument, with a run of marks spelled as escapes (plain ASCII to the outer parser): a server
    /// would decode it, so the gateway refuses the call rather than leave it unexamined.
    @Test func nestedJSONThatIsNotStreamSafeIsRefused() throws {
        let inner = #"{\"k\":\"x"# + String(repeating: #"\\u0316"#, count: 31) + #"\"}"#
        let arguments = try JSONParser.parse(#"{"q":"\#(inner)"}"#)
        guard case .failure(let refusal) = ArgumentCanonicalizer.examine(arguments) else {
            Issue.record("examined")
            return
        }
        #expect(refusal == .nestedJSONNotStreamSafe("q"), "\(refusal.reason)")
    }
}

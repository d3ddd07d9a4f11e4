import Testing

@testable import Policy

/// `PathText`'s refusal of marks and format characters next to a separator or a dot.
@Suite("Path text: invisible characters at separators")
struct PathTextTests {
    /// The check as it was written first: for each invisible scalar, its nearest visible neighbours looked for from
    /// there (quadratic in a run of invisible scalars), kept here as the reference the two-pass check must match.
    static func reference(_ scalars: [Unicode.Scalar]) -> Unicode.Scalar? {
        for (index, scalar) in scalars.enumerated() where PathText.isInvisible(scalar) {
            let before = scalars[..<index].last { !PathText.isInvisible($0) }.map(PathText.isSeparatorOrDot) ?? true
            let after = scalars[(index + 1)...].first { !PathText.isInvisible($0) }.map(PathText.isSeparatorOrDot) ?? true
            if before || after { return scalar }
        }
        return nil
    }

    /// Found in this session: a run of 40,000 zero-width spaces in one segment (120 KB) took 135 s to decide, since
    /// each looked for its neighbours across the whole run. The two-pass check gives the same answer on every
    /// arrangement of marks, format characters, separators, dots and letters (seeded, so a failure replays).
    @Test func twoPassesAgreeWithTheReference() {
        let alphabet: [Unicode.Scalar] = ["a", "b", "/", ".", "\u{0301}", "\u{200B}", "\u{034F}", "\u{20DD}", "\u{0903}", "\u{FEFF}", "é"]
        var generator = SplitMix(seed: 20_261_129)
        var refused = 0
        for _ in 0..<20_000 {
            let scalars = (0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            let expected = Self.reference(scalars)
            #expect(PathText.invisibleTouchingSeparator(scalars) == expected, "\(scalars.map { String($0.value, radix: 16) })")
            if expected != nil { refused += 1 }
        }
        #expect(refused > 1000)
    }

    @Test("a long run of format characters inside a segment is allowed, and refused where it touches a separator")
    func longRuns() {
        let run = String(repeating: "\u{200B}", count: 200_000)
        #expect(PathText("data/a" + run + "b").refusal == nil)
        #expect(PathText("data/a" + run + "/b").refusal?.contains("U+200B") == true)
        #expect(PathText(run + "data").refusal?.contains("U+200B") == true)
    }
}

import Testing

@testable import Policy

/// The byte-level fast path for printable-ASCII paths must say exactly what the scalar-level `PathText` says.
@Suite("ASCII path fast path")
struct ASCIIPathTests {
    /// Pieces that exercise every rule: separators of both kinds, dots and dot runs, trailing spaces and dots,
    /// leading spaces, drive letters, `~`, `file:` in both cases, and prefixes that share a beginning.
    static let pieces = [
        "docs", "doc", "docsx", "a", "b.txt", ".", "..", "...", ". .", ".. ", "..  .", "/", "\\", "//", " ", "~", "C:",
        "c:", "1:", "file:", "FiLe:", "fil", "e:", "srv", "data", "x y", ".hidden", "a..b", "%2e", ":", "K", "/./", "/../",
    ]
    static let rules: [ArgumentConstraint.PathRule] = [
        .init(allowedPrefixes: [], allowAbsolute: false, allowTraversal: false),
        .init(allowedPrefixes: ["docs"], allowAbsolute: false, allowTraversal: false),
        .init(allowedPrefixes: ["docs/"], allowAbsolute: true, allowTraversal: true),
        .init(allowedPrefixes: ["/srv/data", "docs"], allowAbsolute: true, allowTraversal: true),
        .init(allowedPrefixes: ["/"], allowAbsolute: true, allowTraversal: false),
        .init(allowedPrefixes: [], allowAbsolute: true, allowTraversal: true),
        .init(allowedPrefixes: ["docs/a", "//", "srv/", ""], allowAbsolute: true, allowTraversal: true),
        // Not ASCII: compared as Strings (KELVIN SIGN is canonically `K`).
        .init(allowedPrefixes: ["\u{212A}", "dócs"], allowAbsolute: true, allowTraversal: true),
    ]

    @Test("agrees with PathText on generated printable-ASCII paths")
    func agreesWithScalarPath() {
        var generator = SplitMix(seed: 0x5EED)
        var compared = 0
        for _ in 0..<20_000 {
            let count = Int(generator.next() % 7)
            let text = (0..<count).map { _ in Self.pieces[Int(generator.next() % UInt64(Self.pieces.count))] }.joined()
            for rule in Self.rules {
                let fast = ASCIIPath.problem(text, rule)
                #expect(fast == .decided(ArgumentConstraint.scalarPathProblem(text, rule)), "\(text.debugDescription)")
                compared += 1
            }
        }
        #expect(compared == 160_000)
    }

    @Test(
        "known answers",
        arguments: [
            ("docs/a.txt", nil), ("docs\\a.txt", nil), ("  docs/./a", nil), ("docs/../etc", "'..' traversal"),
            ("docs/.. /x", "'..' traversal"), ("docs/....", "'..' traversal"), ("/etc/passwd", "absolute path"),
            ("C:/x", "absolute path"), ("FILE:x", "absolute path"), ("~/x", "absolute path"),
            ("documents/x", "outside the allowed prefixes [\"docs\"]"),
        ] as [(String, String?)])
    func knownAnswers(path: String, problem: String?) {
        let rule = ArgumentConstraint.PathRule(allowedPrefixes: ["docs"], allowAbsolute: false, allowTraversal: false)
        #expect(ASCIIPath.problem(path, rule) == .decided(problem))
    }

    @Test("text outside printable ASCII is left to PathText")
    func leavesOthers() {
        let rule = ArgumentConstraint.PathRule(allowedPrefixes: ["docs"], allowAbsolute: false, allowTraversal: false)
        for text in ["docs/\u{7F}", "docs\u{2215}x", "docs/\t", "dócs", "docs/\u{0}"] {
            #expect(ASCIIPath.problem(text, rule) == .notASCII)
        }
        #expect(ArgumentConstraint.pathProblem("docs\u{2215}..\u{2215}x", rule) == "'..' traversal")
    }
}

/// A small seeded generator, so the generated paths are the same on every run.
struct SplitMix: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

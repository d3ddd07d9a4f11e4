import Foundation
import Testing

@testable import Policy

/// `NormalizationCost.normalized` computes NFKC as NFC, natively, where every scalar is its own NFKC, and through
/// Foundation elsewhere. These tests hold it to Foundation's NFKC.
@Suite("NFKC forms")
struct NFKCFormTests {
    /// Every scalar that the standard library says NFKC case folding leaves alone is its own NFKC, by Foundation. The
    /// fast path rests on this; a Unicode update that broke it would fail here, not in a policy decision.
    @Test func scalarsUnchangedByNFKCCaseFoldingAreTheirOwnNFKC() {
        var checked: [Unicode.Scalar] = []
        for value in UInt32(0x80)...0x10FFFF {
            guard let scalar = Unicode.Scalar(value), !scalar.properties.changesWhenNFKCCaseFolded,
                scalar.properties.generalCategory != .unassigned
            else { continue }
            checked.append(scalar)
        }
        #expect(checked.count > 100_000)
        // Each alone, between ASCII spaces (NFKC never joins across an ASCII scalar), in pieces of 2,000.
        var mismatches: [String] = []
        for start in stride(from: 0, to: checked.count, by: 2000) {
            let piece = checked[start..<min(start + 2000, checked.count)]
            let text = piece.map { String($0) }.joined(separator: " ")
            let normalized = text.precomposedStringWithCompatibilityMapping
            guard !normalized.unicodeScalars.elementsEqual(text.unicodeScalars) else { continue }
            for scalar in piece where !String(scalar).precomposedStringWithCompatibilityMapping.unicodeScalars.elementsEqual([scalar]) {
                mismatches.append(String(scalar.value, radix: 16))
            }
        }
        #expect(mismatches.isEmpty, "not their own NFKC: \(mismatches.prefix(20))")
    }

    /// Texts from an alphabet of every kind of scalar that NFKC treats differently: composing pairs in both orders,
    /// marks to reorder, Hangul jamo and syllables, compatibility characters, upper-case letters, default-ignorables.
    @Test func sameAsFoundationOnMixedText() {
        let alphabet: [String] = [
            "a", "e", "E", "/", " ", ".", "é", "É", "e\u{0301}", "\u{0301}", "\u{0316}", "\u{0327}", "\u{0338}", ">",
            "ж", "Ж", "中", "\u{F900}", "ﬁ", "Ａ", "\u{212A}", "\u{2126}", "\u{00AD}", "\u{200B}", "\u{1100}", "\u{1161}",
            "\u{11A8}", "한", "\u{0B47}", "\u{0B3E}", "\u{0DD9}", "\u{0DCF}", "\u{0F73}", "\u{FDFA}", "😀", "\u{1F1E6}",
            "ß", "\u{0345}", "\u{1FBB}", "\u{00A0}", "Å", "A\u{030A}", "\u{212B}", "ǅ", "\u{AC00}", "\u{0CCA}", "\u{0CD5}",
            "\u{1176}", "\u{11A7}", "\u{11C3}", "\u{1113}",
        ]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<400 {
            let count = round < 390 ? Int.random(in: 1...40, using: &generator) : Int.random(in: 5000...12000, using: &generator)
            let text = (0..<count).map { _ in alphabet.randomElement(using: &generator)! }.joined()
            // Foundation's NFKD composed by the standard library (Foundation's own composition on Linux is wrong for
            // some Hangul and Kannada: checked against Python's unicodedata by review). The fixed vectors in `examples`
            // hold this reference to Unicode's algorithm.
            let expected = String(decoding: text.decomposedStringWithCompatibilityMapping._nfcCodeUnits, as: UTF8.self)
            let normalized = NormalizationCost.normalized(text)
            #expect(normalized.utf8.elementsEqual(expected.utf8), "\(text.unicodeScalars.map { String($0.value, radix: 16) })")
        }
    }

    @Test("accented, Cyrillic and CJK text is returned in NFC without asking Foundation; compatibility forms are folded")
    func examples() {
        #expect(NormalizationCost.normalized("cre\u{0300}me bru\u{0302}le\u{0301}e").utf8.elementsEqual("crème brûlée".utf8))
        #expect(NormalizationCost.normalized("ЖУРНАЛ журнал 中文").utf8.elementsEqual("ЖУРНАЛ журнал 中文".utf8))
        #expect(NormalizationCost.normalized("ﬁle／Ｘ \u{212A}").utf8.elementsEqual("file/X K".utf8))
        // One form whichever path the text takes (found by review: with an NBSP beside it, Foundation's path left the
        // syllable and its final jamo apart).
        #expect(NormalizationCost.normalized("\u{AC00}\u{11A8}").utf8.elementsEqual("\u{AC01}".utf8))
        #expect(NormalizationCost.normalized("\u{AC00}\u{11A8}\u{00A0}").utf8.elementsEqual("\u{AC01} ".utf8))
        #expect(NormalizationCost.normalized("\u{0CCA}\u{0CD5}\u{FB01}").utf8.elementsEqual("\u{0CCB}fi".utf8))
        // Hangul at the edges of the composition ranges, as Unicode's algorithm composes them (L 1100–1112, V 1161–1175,
        // T 11A8–11C2), alone and beside an NBSP: Foundation's bounds were off by one (found by review: `1100 1176`
        // became `AE4C`, and `1100 1161 11A7` lost its `11A7`).
        for (text, nfkc) in [
            ("\u{1100}\u{1176}", "\u{1100}\u{1176}"), ("\u{1100}\u{1161}\u{11C3}", "\u{AC00}\u{11C3}"),
            ("\u{1100}\u{1161}\u{11A7}", "\u{AC00}\u{11A7}"), ("\u{1113}\u{1161}", "\u{1113}\u{1161}"),
            ("\u{1112}\u{1175}\u{11C2}", "\u{D7A3}"),
        ] {
            #expect(NormalizationCost.normalized(text).utf8.elementsEqual(nfkc.utf8), "\(text.unicodeScalars.map(\.value))")
            #expect(
                NormalizationCost.normalized(text + "\u{00A0}").utf8.elementsEqual((nfkc + " ").utf8),
                "through Foundation: \(text.unicodeScalars.map(\.value))")
        }
        var forms = NormalizationCost.OwnNFKCForms()
        #expect(forms.isOwnNFKC("é") && forms.isOwnNFKC("É") && forms.isOwnNFKC("Ж"))
        #expect(!forms.isOwnNFKC("ﬁ") && !forms.isOwnNFKC("\u{212A}") && !forms.isOwnNFKC("\u{FF0F}"))
    }

    /// Found by review: pieces were cut only before ASCII and before starters other than Hangul jamo, so text of jamo
    /// vowels and marks was one piece, and Foundation's decomposition of one long piece is quadratic (4 MiB of
    /// U+1161 U+0344, about 140 s). Every piece is now about `pieceBytes`, and the result is still Foundation's NFKD of
    /// the whole text composed by the standard library.
    @Test func jamoVowelsAndMarksAreCutIntoPieces() {
        let text = String(repeating: "\u{1161}\u{0344}", count: 20_000)
        let pieces = NormalizationCost.pieces(of: text)
        #expect(pieces.count > 3)
        #expect(pieces.allSatisfy { String($0).utf8.count <= NormalizationCost.pieceBytes + 8 })
        let expected = String(decoding: text.decomposedStringWithCompatibilityMapping._nfcCodeUnits, as: UTF8.self)
        #expect(NormalizationCost.normalized(text).utf8.elementsEqual(expected.utf8))
    }

    @Test("byte equality is not canonical equivalence")
    func sameBytes() {
        #expect("e\u{0301}" == "é" && !"e\u{0301}".hasSameBytes(as: "é") && "é".hasSameBytes(as: "é"))
        #expect(
            "".hasSameBytes(as: "") && !"a".hasSameBytes(as: "b") && "é".hasSameBytes(as: [0xC3, 0xA9]) && !"é".hasSameBytes(as: [0xC3]))
        #expect("a\\b".containsByte(UInt8(ascii: "\\")) && !"ab".containsByte(UInt8(ascii: "\\")) && !"".containsByte(0x41))
    }

    /// Found by review: compatibility characters newer than Foundation's Unicode tables (U+1CCD6–1CCF9, outlined Latin
    /// letters and digits) were taken as their own NFKC, where newer tables make them plain ASCII: `DROP` spelled so
    /// passed every deny token and detector.
    @Test func compatibilityCharactersNewerThanTheTablesAreRefused() throws {
        let newer = "\u{1CCD9}\u{1CCE9}\u{1CCE6}\u{1CCE7}"  // D R O P, outlined
        var forms = NormalizationCost.OwnNFKCForms()
        #expect(forms.scalarWithoutKnownMapping(in: newer)?.value == 0x1CCD9)
        for known in ["ﬁle", "ＤＲＯＰ", "Crème", "ЖУРНАЛ", "a\u{00AD}b", "中文", "\u{212A}"] {
            #expect(forms.scalarWithoutKnownMapping(in: known) == nil, "\(known)")
        }
        let set = try PolicyFixtures.set(
            #"{"name":"n","default_action":"deny","rules":[{"id":"R","action":"deny","tools":["t"],"arg_deny":{"q":"drop"}},{"id":"A","action":"allow","tools":["t"],"args":{"q":{"max_length":100}}}]}"#
        )
        let decision = PolicyFixtures.decide(set, "q", "x " + newer + " TABLE users")
        #expect(decision.outcome == .deny && decision.reason.contains("Unicode tables newer"), "\(decision.reason)")
        #expect(PolicyFixtures.decide(set, "q", "ＳＥＬＥＣＴ 1").outcome == .allow)
        // Reached only in a later round (found by review): percent-encoded twice, and with fullwidth percent signs
        // that NFKC makes `%`.
        for hidden in ["%25F0%259C%25B3%2599%25F0%259C%25B3%25A9", "\u{FF05}F0\u{FF05}9C\u{FF05}B3\u{FF05}99"] {
            let refused = PolicyFixtures.decide(set, "q", hidden)
            #expect(refused.outcome == .deny && refused.reason.contains("U+1CCD9"), "\(hidden): \(refused.reason)")
        }
    }
}

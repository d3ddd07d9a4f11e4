import Foundation
import StrictJSON

/// What NFKC-normalising a text will cost, found before paying it, in one linear pass.
///
/// NFKC output can be far larger than its input (U+FDFA is 3 bytes that become 33), and normalisation reorders each run
/// of combining marks by sorting, which is quadratic in the run's length: 80,000 alternating marks took 5 s, and
/// 2 million would take hours. So before a round of canonicalisation, the text is scanned once:
///
/// - the bytes NFKC can produce are summed from each scalar's compatibility decomposition (composition only shrinks
///   text again), so the canonicalisation budget is charged before the work, not after it;
/// - a run of more than `maximumCombiningRun` non-starters (scalars whose decomposition starts with a combining
///   mark) makes the text not stream-safe (UAX #15 sets the same bound of 30); such text is refused, not normalised.
enum NormalizationCost {
    /// The longest run of combining marks a stream-safe text has (UAX #15, Stream-Safe Text Format).
    static let maximumCombiningRun = StreamSafeText.maximumCombiningRun

    /// Upper bound of the UTF-8 bytes NFKC makes of `text`, or nil when `text` is not stream-safe.
    static func bytes(of text: String) -> Int? {
        var total = 0
        var run = 0
        var decompositions: [UInt32: Decomposition] = [:]
        for scalar in text.unicodeScalars {
            guard scalar.value >= 0x80 else {
                total += 1
                run = 0
                continue
            }
            let decomposition: Decomposition
            if let known = decompositions[scalar.value] {
                decomposition = known
            } else {
                decomposition = Decomposition(scalar)
                decompositions[scalar.value] = decomposition
            }
            total += decomposition.bytes
            run += decomposition.leadingNonStarters
            if run > maximumCombiningRun { return nil }
            if !decomposition.isAllNonStarters { run = decomposition.trailingNonStarters }
        }
        return total
    }

    /// One scalar's compatibility decomposition, as far as cost is concerned.
    private struct Decomposition {
        /// UTF-8 bytes of the decomposition.
        let bytes: Int
        /// Combining marks it starts with.
        let leadingNonStarters: Int
        /// Combining marks it ends with.
        let trailingNonStarters: Int
        /// Whether it is combining marks only (then it extends the run it follows).
        let isAllNonStarters: Bool

        init(_ scalar: Unicode.Scalar) {
            let decomposed = String(scalar).decomposedStringWithCompatibilityMapping.unicodeScalars
            let classes = decomposed.map { $0.properties.canonicalCombiningClass.rawValue != 0 }
            bytes = max(String(scalar).utf8.count, decomposed.reduce(0) { $0 + UTF8.width($1) })
            leadingNonStarters = classes.prefix { $0 }.count
            trailingNonStarters = classes.reversed().prefix { $0 }.count
            isAllNonStarters = !classes.isEmpty && classes.allSatisfy { $0 }
        }
    }
}

extension NormalizationCost {
    /// Bytes normalised at once. Foundation's NFKC moves the rest of its buffer each time it composes a pair, so one call
    /// on text that composes everywhere (`e` + U+0301, over and over) is quadratic: 800,000 scalars took 5.5 s. Cut into
    /// pieces of this size, the work is linear.
    static let pieceBytes = 16 * 1024

    /// `text` in NFKC.
    ///
    /// Where every scalar is its own NFKC, the text's NFKC is its NFC (such a scalar has no compatibility mapping at any
    /// depth of its canonical decomposition, so NFKD is NFD), and the standard library computes NFC natively, in one
    /// linear pass over UTF-8. That is the case for nearly all text (accented letters, Cyrillic, CJK, emoji).
    ///
    /// Otherwise (`ﬁ`, fullwidth forms, the Kelvin sign) Foundation decomposes it (NFKD), piece by piece, and the
    /// standard library composes the whole. Foundation bridges to UTF-16 and back, ten times the cost per byte (a 3 MiB
    /// argument of accented text took 380 ms), and is quadratic on one long piece. Pieces are cut before the first
    /// starter past the piece size (stream-safe text has one at least every 31 scalars). Any cut is exact here:
    /// compatibility decomposition maps each scalar on its own, and the standard library's NFC over the whole text
    /// afterwards reorders marks and composes across the cuts. (Cutting only before ASCII and starters other than
    /// Hangul jamo, as first written when Foundation also composed, left text of jamo vowels and marks one piece: 4 MiB
    /// of U+1161 U+0344 was about 140 s, found by review.)
    static func normalized(_ text: String) -> String {
        var ownForms = OwnNFKCForms()
        return normalized(text, remembering: &ownForms)
    }

    /// `text` in NFKC, asking `ownForms` (which remembers its answers across the texts of one value) which scalars are
    /// their own NFKC.
    static func normalized(_ text: String, remembering ownForms: inout OwnNFKCForms) -> String {
        guard ownForms.holdsOnlyOwnForms(text.utf8) else { return normalizedByFoundation(text) }
        let nfc = text._nfcCodeUnits
        return text.hasSameBytes(as: nfc) ? text : String(decoding: nfc, as: UTF8.self)
    }

    /// `text` in NFKC: Foundation's NFKD (compatibility decomposition), piece by piece (see `normalized`), composed by
    /// the standard library. Foundation's own composition on Linux is wrong in places: it leaves `AC00 11A8` and
    /// Kannada `0CCA 0CD5` apart, so one text took two forms depending on whether an unrelated scalar sent it down this
    /// path, and its Hangul bounds are off by one (`1100 1176` became `AE4C`, `1100 1161 11A7` lost its `11A7`), which
    /// composing its output again cannot undo (found by two reviews). NFC of NFKD is NFKC.
    private static func normalizedByFoundation(_ text: String) -> String {
        String(decoding: foundationDecomposition(text)._nfcCodeUnits, as: UTF8.self)
    }

    private static func foundationDecomposition(_ text: String) -> String {
        guard text.utf8.count > pieceBytes else { return text.decomposedStringWithCompatibilityMapping }
        var output = ""
        output.reserveCapacity(text.utf8.count)
        for piece in pieces(of: text) { output += String(piece).decomposedStringWithCompatibilityMapping }
        return output
    }

    /// `text` cut into the pieces Foundation decomposes one at a time: each ends before the first starter past
    /// `pieceBytes`.
    static func pieces(of text: String) -> [Substring.UnicodeScalarView] {
        let scalars = text.unicodeScalars
        var pieces: [Substring.UnicodeScalarView] = []
        var pieceStart = scalars.startIndex
        var pieceBytes = 0
        var index = scalars.startIndex
        while index != scalars.endIndex {
            let scalar = scalars[index]
            if pieceBytes >= Self.pieceBytes && index != pieceStart && (scalar.isASCII || isStarter(scalar)) {
                pieces.append(scalars[pieceStart..<index])
                pieceStart = index
                pieceBytes = 0
            }
            pieceBytes += UTF8.width(scalar)
            index = scalars.index(after: index)
        }
        pieces.append(scalars[pieceStart...])
        return pieces
    }

    /// Which scalars are their own NFKC. The standard library's Changes_When_NFKC_Casefolded property answers for most
    /// (a scalar it leaves unchanged is its own NFKC, since NFKC_Casefold(x) is in NFKC; `NFKCFormTests` checks every
    /// scalar). The rest — upper-case letters, compatibility characters, default-ignorables — are asked of Foundation,
    /// once per distinct scalar of a text. Answers are remembered in a small direct-mapped table, as the property
    /// lookup costs more than the table. The same answers find compatibility characters newer than Foundation's tables
    /// (`scalarWithoutKnownMapping`).
    struct OwnNFKCForms {
        private var foundationAnswers: [UInt32: Bool] = [:]
        /// Slot `value % 256`: the scalar's value, with `own` set when it is its own NFKC and `unknown` when it is a
        /// compatibility character newer than Foundation's tables; 0 when empty.
        private var recent: [UInt32] = []
        private static let own: UInt32 = 0x8000_0000
        private static let unknown: UInt32 = 0x4000_0000
        private static let value: UInt32 = 0x3FFF_FFFF

        /// Whether every scalar of `utf8` (valid UTF-8) is its own NFKC.
        mutating func holdsOnlyOwnForms(_ utf8: String.UTF8View) -> Bool {
            var iterator = utf8.makeIterator()
            while let lead = iterator.next() {
                guard lead >= 0x80 else { continue }
                // Decoded by hand: the text is valid UTF-8, and a lead byte says how many continuation bytes follow.
                var value = UInt32(lead)
                let continuations = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : 1
                value &= lead >= 0xF0 ? 0x07 : lead >= 0xE0 ? 0x0F : 0x1F
                for _ in 0..<continuations { value = value << 6 | UInt32(iterator.next()! & 0x3F) }
                if !isOwnNFKC(Unicode.Scalar(value)!) { return false }
            }
            return true
        }

        /// Whether NFKC leaves `scalar`, alone, unchanged.
        mutating func isOwnNFKC(_ scalar: Unicode.Scalar) -> Bool { flags(of: scalar) & Self.own != 0 }

        /// A scalar of `text` that the standard library says NFKC case folding changes for no reason it can name (not
        /// case, not a default-ignorable), while Foundation's older Unicode tables leave it unchanged: a compatibility
        /// character newer than those tables (found by review: U+1CCD6–1CCF9, outlined Latin letters and digits of
        /// Unicode 16, which newer NFKC makes plain ASCII, and U+A7F1). The gateway cannot canonicalise it, so a value
        /// holding one is refused by the constraints that cover it. Nil when there is none.
        mutating func scalarWithoutKnownMapping(in text: String) -> Unicode.Scalar? {
            text.unicodeScalars.first { !$0.isASCII && flags(of: $0) & Self.unknown != 0 }
        }

        /// The scalar's slot in `recent`, filled from the standard library's properties and, where they do not settle
        /// it, Foundation's answer.
        private mutating func flags(of scalar: Unicode.Scalar) -> UInt32 {
            if recent.isEmpty { recent = Array(repeating: 0, count: 256) }
            let slot = Int(scalar.value & 0xFF)
            if recent[slot] & Self.value == scalar.value { return recent[slot] }
            var flags = scalar.value
            let properties = scalar.properties
            if !properties.changesWhenNFKCCaseFolded {
                flags |= Self.own
            } else if foundationKeeps(scalar) {
                // Case folding or a default-ignorable explains the change; otherwise NFKC itself changes it in newer
                // tables than Foundation's.
                flags |= Self.own
                if !properties.changesWhenCaseFolded && !properties.isDefaultIgnorableCodePoint { flags |= Self.unknown }
            }
            recent[slot] = flags
            return flags
        }

        /// Whether Foundation's NFKC leaves `scalar`, alone, unchanged (asked once per distinct scalar).
        private mutating func foundationKeeps(_ scalar: Unicode.Scalar) -> Bool {
            if let known = foundationAnswers[scalar.value] { return known }
            let answer = String(scalar).precomposedStringWithCompatibilityMapping.unicodeScalars.elementsEqual(CollectionOfOne(scalar))
            foundationAnswers[scalar.value] = answer
            return answer
        }
    }

    /// A scalar of canonical combining class 0.
    private static func isStarter(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.canonicalCombiningClass.rawValue == 0 }
}

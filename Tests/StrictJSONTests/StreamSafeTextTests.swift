import StrictJSON
import Testing

@Suite("Stream-safe text (at most 30 combining marks in a row)")
struct StreamSafeTextTests {
    @Test("bytes and scalars agree: runs of marks are counted, a starter or a byte that is not UTF-8 ends a run")
    func runs() {
        let marks = { (count: Int) in String(repeating: "\u{0301}\u{0316}", count: count / 2) }
        let cases: [(String, Bool)] = [
            ("", true), ("plain ASCII, longer than eight bytes", true), ("x" + marks(30), true), ("x" + marks(32), false),
            (marks(30) + "a" + marks(30), true), ("\u{00E9}" + marks(30), true), (marks(30) + "\u{0301}", false),
            // Scalars below U+0300 and starters above it end a run.
            (marks(30) + "\u{00FF}" + marks(30), true), (marks(30) + "\u{4E00}" + marks(30), true),
        ]
        for (text, safe) in cases {
            #expect(StreamSafeText.isStreamSafe(text.unicodeScalars) == safe, "\(text.unicodeScalars.count) scalars")
            #expect(Array(text.utf8).withUnsafeBytes { StreamSafeText.isStreamSafe(utf8: $0) } == safe, "\(text.utf8.count) bytes")
        }
        // A byte that is not UTF-8 reads as U+FFFD, as `String(decoding:)` reads it: no mark.
        let broken = Array(("x" + marks(30)).utf8) + [0xFF] + Array(marks(30).utf8)
        #expect(broken.withUnsafeBytes { StreamSafeText.isStreamSafe(utf8: $0) })
        #expect(!(Array(("x" + marks(30)).utf8) + Array("\u{0316}".utf8)).withUnsafeBytes { StreamSafeText.isStreamSafe(utf8: $0) })
    }

    @Test("a byte of 0x80 or above is found wherever it sits")
    func nonASCII() {
        for length in 0..<24 {
            var bytes = [UInt8](repeating: 0x61, count: length)
            #expect(!bytes.withUnsafeBytes(StreamSafeText.holdsNonASCII))
            for position in 0..<length {
                bytes[position] = 0x80
                #expect(bytes.withUnsafeBytes(StreamSafeText.holdsNonASCII), "\(length) at \(position)")
                bytes[position] = 0x61
            }
        }
    }
}

/// Text with no more than 30 combining marks in a row: scalars of a nonzero canonical combining class, counted as sent
/// (UAX #15's Stream-Safe Text Format sets the same bound, counted after decomposition).
///
/// Swift compares, hashes and splits strings into characters by canonical equivalence, which puts each run of
/// combining marks in order by insertion sort: a run of n marks of alternating classes costs O(n²) in every `==`,
/// hash and `Character` split that meets it (20,000 marks: about 0.2 s per comparison; a 1 MiB run, minutes). Text
/// from outside is held to this bound before it becomes a `String` the gateway compares or splits: JSON strings (the
/// parser), HTTP header values (the framing of requests and upstream answers) and the SSE events it reads.
public enum StreamSafeText {
    /// The longest run of combining marks stream-safe text has (UAX #15 sets 30).
    public static let maximumCombiningRun = 30

    /// Whether `scalars` hold no run of more than `maximumRun` combining marks (scalars of a nonzero canonical
    /// combining class; they all lie at U+0300 or above, so nothing below is looked up).
    public static func isStreamSafe(_ scalars: some Sequence<Unicode.Scalar>, maximumRun: Int = maximumCombiningRun) -> Bool {
        var run = 0
        for scalar in scalars {
            guard scalar.value >= 0x300, scalar.properties.canonicalCombiningClass.rawValue != 0 else {
                run = 0
                continue
            }
            run += 1
            if run > maximumRun { return false }
        }
        return true
    }

    /// Whether the UTF-8 `bytes` are stream-safe, read as `String(decoding:as:)` reads them (a byte that is not UTF-8
    /// becomes U+FFFD, which is no mark). ASCII, the usual case, is recognised eight bytes at a time.
    public static func isStreamSafe(utf8 bytes: UnsafeRawBufferPointer, maximumRun: Int = maximumCombiningRun) -> Bool {
        guard holdsNonASCII(bytes) else { return true }
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var run = 0
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                guard scalar.value >= 0x300, scalar.properties.canonicalCombiningClass.rawValue != 0 else {
                    run = 0
                    continue
                }
                run += 1
                if run > maximumRun { return false }
            case .error:
                run = 0
            case .emptyInput:
                return true
            }
        }
    }

    /// Whether `bytes` hold a byte of 0x80 or above.
    public static func holdsNonASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while bytes.count - index >= 8 {
            if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return true }
            index += 8
        }
        while index < bytes.count {
            if bytes[index] >= 0x80 { return true }
            index += 1
        }
        return false
    }
}

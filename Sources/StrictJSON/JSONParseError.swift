/// Why some bytes are not acceptable JSON; `offset` is the byte position where the problem was found.
public struct JSONParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong, in words.
    public let reason: String
    /// Byte offset in the input.
    public let offset: Int
    /// Whether the text was valid up to a nesting deeper than the limit (`JSONLimits.maximumDepth`).
    public var isTooDeep = false
    /// Whether the text was valid up to a string that is not stream-safe (`JSONLimits.maximumCombiningRun`).
    public var isNotStreamSafe = false

    public var description: String { "\(reason) at byte \(offset)" }
}

/// Bounds on what the parser accepts, so hostile input cannot exhaust the stack or memory.
public struct JSONLimits: Sendable, Hashable {
    /// Deepest nesting of arrays and objects.
    public var maximumDepth: Int
    /// Largest input in bytes.
    public var maximumBytes: Int
    /// Read what Python's `json.loads` reads, not only strict JSON: a repeated key is kept (every value, in order),
    /// `NaN`, `Infinity` and `-Infinity` are numbers, and a lone surrogate escape is U+FFFD. For text a server will
    /// decode leniently (JSON inside a string argument), so that nothing it decodes escapes the gateway's checks.
    public var lenient: Bool
    /// Most combining marks (scalars of a non-zero canonical combining class) in a row in any string, key or value:
    /// text within it is stream-safe (Unicode's UAX #15 bound). Swift compares and hashes strings by canonical
    /// equivalence, which sorts a run of marks by insertion: a key of 20,000 marks out of order took about 0.2 s per
    /// comparison, and a call whose constraints compared it once per leaf held an event loop for minutes (found by
    /// review in the fourth session of 2026-11-29). No text a person writes comes near 30.
    public var maximumCombiningRun: Int

    /// Limits with defaults fit for requests: depth 64, 4 MiB, strict, stream-safe strings.
    public init(
        maximumDepth: Int = 64, maximumBytes: Int = 4 * 1024 * 1024, lenient: Bool = false,
        maximumCombiningRun: Int = StreamSafeText.maximumCombiningRun
    ) {
        self.maximumDepth = maximumDepth
        self.maximumBytes = maximumBytes
        self.lenient = lenient
        self.maximumCombiningRun = maximumCombiningRun
    }
}

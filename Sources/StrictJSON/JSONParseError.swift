/// Why some bytes are not acceptable JSON; `offset` is the byte position where the problem was found.
public struct JSONParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong, in words.
    public let reason: String
    /// Byte offset in the input.
    public let offset: Int

    public var description: String { "\(reason) at byte \(offset)" }
}

/// Bounds on what the parser accepts, so hostile input cannot exhaust the stack or memory.
public struct JSONLimits: Sendable, Hashable {
    /// Deepest nesting of arrays and objects.
    public var maximumDepth: Int
    /// Largest input in bytes.
    public var maximumBytes: Int

    /// Limits with defaults fit for requests: depth 64, 4 MiB.
    public init(maximumDepth: Int = 64, maximumBytes: Int = 4 * 1024 * 1024) {
        self.maximumDepth = maximumDepth
        self.maximumBytes = maximumBytes
    }
}

/// A JSON value as parsed, without loss: numbers keep their literal text, objects keep their member order.
public enum JSONValue: Sendable, Hashable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number, exactly as written (no rounding through `Double`).
    case number(JSONNumber)
    /// A string (escapes resolved).
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object whose keys are unique.
    case object(JSONObject)

    /// The string, if this is one.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The object, if this is one.
    public var objectValue: JSONObject? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The array, if this is one.
    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The number, if this is one.
    public var numberValue: JSONNumber? {
        if case .number(let value) = self { return value }
        return nil
    }

    /// The Boolean, if this is one.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// A short name of the JSON type, for error messages: `string`, `number`, `object`...
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

/// A JSON number kept as its literal text.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// The number exactly as it appeared in the input, e.g. `-12.50e3`.
    public let literal: String

    /// A number from already validated literal text.
    init(literal: String) { self.literal = literal }

    /// A number from an integer.
    public init(_ value: Int64) { literal = String(value) }

    /// A number from a finite `Double` (shortest text that reads back to the same value); nil for NaN or infinity.
    public init?(_ value: Double) {
        guard value.isFinite else { return nil }
        literal = "\(value)"
    }

    /// The value as an integer, when it is one that fits (`3`, not `3.0` or `3e0`).
    public var int64Value: Int64? { Int64(literal) }

    /// The value as a `Double` (may round).
    public var doubleValue: Double? { Double(literal) }

    public var description: String { literal }
}

/// A JSON object: members in input order, keys unique.
public struct JSONObject: Sendable, Hashable {
    /// One `"key": value` member.
    public struct Member: Sendable, Hashable {
        /// The key, escapes resolved.
        public let key: String
        /// The value.
        public let value: JSONValue

        /// A member from its key and value.
        public init(key: String, value: JSONValue) {
            self.key = key
            self.value = value
        }
    }

    /// The members in the order they appeared.
    public let members: [Member]

    /// An object from members whose keys are unique (checked by the parser; callers building objects by hand must
    /// not repeat keys).
    public init(_ members: [Member]) { self.members = members }

    /// An object from key/value pairs in order.
    public init(_ pairs: KeyValuePairs<String, JSONValue>) {
        self.members = pairs.map { Member(key: $0.key, value: $0.value) }
    }

    /// The value of `key`, if present. By index: `first(where:)` would copy each member it passes (a retain and a
    /// release of its value), and members are looked up several times per message.
    public subscript(key: String) -> JSONValue? {
        for index in members.indices where members[index].key == key { return members[index].value }
        return nil
    }

    /// The keys in order.
    public var keys: [String] { members.map(\.key) }
}

/// A field of a configuration document that is missing, mistyped or unknown; `path` says where (`tenants.acme.jwt`).
public struct JSONFieldError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Dotted path of the offending field.
    public let path: String
    /// What is wrong with it.
    public let reason: String

    /// An error about the field at `path`.
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(path): \(reason)" }
}

/// Reads typed fields out of one JSON object of a configuration document. Unknown keys are errors (so a typo
/// cannot silently drop a setting), and every error names the field's path.
public struct JSONObjectReader: Sendable {
    /// Dotted path of this object in the document ("" for the root).
    public let path: String
    /// The object being read.
    public let object: JSONObject

    /// A reader for `value`, which must be an object.
    public init(_ value: JSONValue, path: String = "") throws(JSONFieldError) {
        guard case .object(let object) = value else {
            throw JSONFieldError(path: path.isEmpty ? "(document)" : path, reason: "expected an object, found \(value.typeName)")
        }
        self.path = path
        self.object = object
    }

    /// Fails on the first key not in `allowed`.
    public func requireOnlyKeys(_ allowed: Set<String>) throws(JSONFieldError) {
        for key in object.keys where !allowed.contains(key) {
            throw JSONFieldError(
                path: fieldPath(key), reason: "unknown key (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    /// The dotted path of `key` in this object.
    public func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// A string field, or nil when absent.
    public func string(_ key: String) throws(JSONFieldError) -> String? {
        guard let value = object[key] else { return nil }
        guard case .string(let text) = value else { throw mistyped(key, "a string", value) }
        return text
    }

    /// A string field that must be present.
    public func requiredString(_ key: String) throws(JSONFieldError) -> String {
        guard let text = try string(key) else { throw JSONFieldError(path: fieldPath(key), reason: "is required") }
        return text
    }

    /// An array-of-strings field, or nil when absent.
    public func strings(_ key: String) throws(JSONFieldError) -> [String]? {
        guard let value = object[key] else { return nil }
        guard case .array(let elements) = value else { throw mistyped(key, "an array of strings", value) }
        var texts: [String] = []
        for (position, element) in elements.enumerated() {
            guard case .string(let text) = element else {
                throw JSONFieldError(path: "\(fieldPath(key))[\(position)]", reason: "expected a string, found \(element.typeName)")
            }
            texts.append(text)
        }
        return texts
    }

    /// A Boolean field, or nil when absent.
    public func bool(_ key: String) throws(JSONFieldError) -> Bool? {
        guard let value = object[key] else { return nil }
        guard case .bool(let flag) = value else { throw mistyped(key, "true or false", value) }
        return flag
    }

    /// A number field, or nil when absent.
    public func double(_ key: String) throws(JSONFieldError) -> Double? {
        guard let value = object[key] else { return nil }
        guard case .number(let number) = value else { throw mistyped(key, "a number", value) }
        guard let double = number.doubleValue, double.isFinite else {
            // A number all the same: say what is wrong with it (found by review: "expected a number, found number").
            throw JSONFieldError(path: fieldPath(key), reason: "\(number) is out of range (at most about 1.8e308)")
        }
        return double
    }

    /// An integer field, or nil when absent.
    public func int(_ key: String) throws(JSONFieldError) -> Int? {
        guard let value = object[key] else { return nil }
        guard case .number(let number) = value else { throw mistyped(key, "an integer", value) }
        guard let integer = number.int64Value else {
            // A number all the same: say what is wrong with it (found by review: "expected an integer, found number").
            throw JSONFieldError(
                path: fieldPath(key), reason: "\(number) is not a whole number written without a fraction or exponent, within ±9.2e18")
        }
        return Int(integer)
    }

    /// An integer field that must lie in `range`, or nil when absent.
    public func int(_ key: String, in range: ClosedRange<Int>) throws(JSONFieldError) -> Int? {
        guard let value = try int(key) else { return nil }
        guard range.contains(value) else {
            throw JSONFieldError(path: fieldPath(key), reason: "must be between \(range.lowerBound) and \(range.upperBound) (got \(value))")
        }
        return value
    }

    /// A nested object field, or nil when absent.
    public func object(_ key: String) throws(JSONFieldError) -> JSONObjectReader? {
        guard let value = object[key] else { return nil }
        return try JSONObjectReader(value, path: fieldPath(key))
    }

    /// An array-of-objects field, or nil when absent.
    public func objects(_ key: String) throws(JSONFieldError) -> [JSONObjectReader]? {
        guard let value = object[key] else { return nil }
        guard case .array(let elements) = value else { throw mistyped(key, "an array of objects", value) }
        var readers: [JSONObjectReader] = []
        for (position, element) in elements.enumerated() {
            readers.append(try JSONObjectReader(element, path: "\(fieldPath(key))[\(position)]"))
        }
        return readers
    }

    /// Every member whose value is an object, as (key, reader) — for maps such as `tenants`.
    public func objectMembers() throws(JSONFieldError) -> [(key: String, reader: JSONObjectReader)] {
        var result: [(key: String, reader: JSONObjectReader)] = []
        for member in object.members {
            result.append((member.key, try JSONObjectReader(member.value, path: fieldPath(member.key))))
        }
        return result
    }

    private func mistyped(_ key: String, _ expected: String, _ value: JSONValue) -> JSONFieldError {
        JSONFieldError(path: fieldPath(key), reason: "expected \(expected), found \(value.typeName)")
    }
}

/// Why a key could not be loaded or used.
public enum JWTKeyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file could not be read.
    case unreadable(path: String, reason: String)
    /// The bytes are not a key of the expected kind.
    case invalid(String)
    /// The key exists but cannot serve as a JWT key (size, curve, type).
    case unsuitable(String)
    /// The key's type does not fit the algorithm it was registered for.
    case algorithmMismatch(key: String, requested: JWTAlgorithm)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read key file \(path): \(reason)"
        case .invalid(let what): "invalid key: \(what)"
        case .unsuitable(let what): "unsuitable key: \(what)"
        case .algorithmMismatch(let key, let requested): "a \(key) key cannot be used for \(requested.rawValue)"
        }
    }
}

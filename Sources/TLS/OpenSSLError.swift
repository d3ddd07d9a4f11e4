internal import COpenSSL

/// One entry of OpenSSL's error queue: the packed error code and OpenSSL's own reason string.
public struct OpenSSLError: Sendable, Hashable, CustomStringConvertible {
    /// The packed OpenSSL error code (`ERR_get_error`).
    public let code: UInt
    /// OpenSSL's description, e.g. `error:0A000086:SSL routines::certificate verify failed`.
    public let reason: String

    public var description: String { reason }
}

/// The calling thread's OpenSSL error queue.
enum OpenSSLErrorQueue {
    /// Empties the queue and returns what it held, oldest first.
    static func drain() -> [OpenSSLError] {
        var errors: [OpenSSLError] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { return errors }
            var text = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &text, text.count)
            errors.append(
                OpenSSLError(code: code, reason: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
    }

    /// Forgets whatever an earlier operation left behind, so that the next failure reports only its own errors.
    static func clear() {
        ERR_clear_error()
    }
}

/// Why a Redis command has no reply.
public enum RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No connection could be made (refused, unreachable, TLS or authentication failed).
    case connectionFailed(String)
    /// The connection closed before the reply came.
    case connectionClosed
    /// The reply did not come before the command's deadline.
    case timedOut
    /// The server's bytes were not RESP.
    case protocolError(String)
    /// The client is waiting before it tries to connect again (after a failure), and fails commands at once.
    case backingOff(secondsLeft: Double)
    /// The server answered the command with an error reply.
    case server(String)

    public var description: String {
        switch self {
        case .connectionFailed(let why): "cannot connect: \(why)"
        case .connectionClosed: "the connection closed"
        case .timedOut: "no reply in time"
        case .protocolError(let why): "protocol error: \(why)"
        case .backingOff(let seconds): "unreachable; next attempt in \(Int((seconds * 1000).rounded(.up))) ms"
        case .server(let text): "server error: \(text)"
        }
    }

    /// Whether the server itself is unreachable or misbehaving (as opposed to refusing one command).
    public var isUnavailability: Bool {
        if case .server = self { return false }
        return true
    }
}

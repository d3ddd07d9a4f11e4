/// A `HOST:PORT` pair to listen on, e.g. `127.0.0.1:8443`, `[::1]:8443` or `localhost:0`.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address (IPv6 without brackets).
    public var host: String

    /// Whether the address is on loopback (`localhost`, 127.0.0.0/8, `::1`).
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.") || host.lowercased().hasPrefix("::ffff:127.")
    }
    /// TCP port; 0 asks the system for a free one.
    public var port: Int

    /// An address from its parts.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; IPv6 hosts go in brackets (`[::1]:8443`). Nil when the text is not such a pair.
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port), portText.allSatisfy(\.isNumber) else {
            return nil
        }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether two listeners at `self` and `other` cannot both bind on Linux: the same port (not 0) on the same host,
    /// or on a wildcard address that covers the other's. `0.0.0.0` covers IPv4 addresses; `::` covers both families
    /// (Linux binds it dual-stack unless `bindv6only` is set); a specific IPv6 address and an IPv4 one never collide.
    /// Host names are taken to name an address of either family.
    public func collides(with other: ListenAddress) -> Bool {
        guard port != 0, port == other.port else { return false }
        if host.lowercased() == other.host.lowercased() { return true }
        return covers(other.family) || other.covers(family)
    }

    private enum Family { case v4, v6, name }

    private var family: Family {
        if host.contains(":") { return .v6 }
        return host.utf8.allSatisfy { $0 == UInt8(ascii: ".") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
            ? .v4 : .name
    }

    /// Whether this address is a wildcard whose bind takes the port of every address of `family`.
    private func covers(_ family: Family) -> Bool {
        switch host {
        case "::", "*": true
        case "0.0.0.0": family != .v6
        default: false
        }
    }
}

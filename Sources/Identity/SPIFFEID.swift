/// A SPIFFE id of the form `spiffe://<trust-domain>/tenant/<tenant>/agent/<agent>`, as mcpgw agent certificates
/// carry in their SAN URI.
public struct SPIFFEID: Sendable, Hashable, CustomStringConvertible {
    /// The trust domain, e.g. `mcpgw.dev`.
    public let trustDomain: String
    /// The tenant named in the path.
    public let tenant: String
    /// The agent named in the path.
    public let agent: String

    /// Parses `uri`; nil unless it has exactly the mcpgw shape with non-empty, plain segments.
    ///
    /// Segments may use letters, digits, `-`, `_` and `.` (but not be `.` or `..`), so that no percent-encoding,
    /// case or path trick can make two different URIs name the same agent.
    public init?(uri: String) {
        guard uri.hasPrefix("spiffe://") else { return nil }
        let parts = uri.dropFirst("spiffe://".count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "tenant", parts[3] == "agent",
            Self.isDomain(parts[0]), Self.isSegment(parts[2]), Self.isSegment(parts[4])
        else { return nil }
        trustDomain = String(parts[0])
        tenant = String(parts[2])
        agent = String(parts[4])
    }

    public var description: String { "spiffe://\(trustDomain)/tenant/\(tenant)/agent/\(agent)" }

    private static func isSegment(_ text: Substring) -> Bool {
        !text.isEmpty && text.count <= 128 && text != "." && text != ".."
            && text.unicodeScalars.allSatisfy { isPlain($0) }
    }

    private static func isDomain(_ text: Substring) -> Bool {
        !text.isEmpty && text.count <= 253
            && text.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "." }
    }

    private static func isPlain(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
            || scalar == "-" || scalar == "_" || scalar == "."
    }
}

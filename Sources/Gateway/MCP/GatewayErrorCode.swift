/// JSON-RPC error codes mcpgw uses for its own refusals. They lie outside the range JSON-RPC reserves
/// (-32768 … -32000), and so outside MCP's reserved -32020 … -32099.
public enum GatewayErrorCode {
    /// The policy denied the call (`data` has `rule` and `reason`).
    public static let policyDenied = -31001
    /// A rate limit refused the call (`data` has `rule` and `retry_after_seconds`).
    public static let rateLimited = -31002
    /// The caller is not authenticated, or its credentials disagree.
    public static let authenticationFailed = -31003
    /// The upstream could not be reached, failed, or did not answer in time.
    public static let upstreamUnavailable = -31004
    /// The audit log cannot take records; nothing is forwarded until it can.
    public static let auditUnavailable = -31005
    /// The session belongs to another principal.
    public static let sessionNotYours = -31006
    /// A rate limit shared across replicas could not be consulted (its store, Redis, is out of reach) and the
    /// tenant fails closed; retry shortly.
    public static let sharedLimitsUnavailable = -31007
    /// A header that mirrors the body (`Mcp-Method`, `Mcp-Name`) disagrees with it (MCP's own code).
    public static let headerMismatch = -32020
}

public import StrictJSON

/// A JWS in compact serialisation, split and decoded but not yet verified.
///
/// Parsing is strict: exactly three segments, strict base64url without padding, a non-empty signature, header and
/// payload JSON objects without duplicate keys, no `crit` header, and a size limit checked before anything else.
public struct CompactJWS: Sendable {
    /// The decoded protected header.
    public let header: JSONObject
    /// The decoded payload (claims), which must not be trusted before the signature is verified.
    public let payload: JSONObject
    /// The bytes that were signed: `base64url(header) "." base64url(payload)`.
    public let signingInput: [UInt8]
    /// The signature bytes.
    public let signature: [UInt8]

    /// `alg` from the header.
    public var algorithmName: String? { header["alg"]?.stringValue }
    /// `kid` from the header.
    public var keyID: String? { header["kid"]?.stringValue }
    /// `typ` from the header, when it is a string (a tenant that names token types refuses any other).
    public var typeName: String? { header["typ"]?.stringValue }

    /// Splits and decodes `token`.
    public init(parsing token: String, maximumBytes: Int) throws(AuthenticationError) {
        let bytes = Array(token.utf8)
        guard bytes.count <= maximumBytes else { throw .tokenTooLarge(bytes: bytes.count, limit: maximumBytes) }
        let segments = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard segments.count == 3 else { throw .malformedToken("expected 3 dot-separated segments, found \(segments.count)") }
        guard !segments[0].isEmpty, !segments[1].isEmpty else { throw .malformedToken("empty header or payload segment") }
        guard !segments[2].isEmpty else { throw .malformedToken("empty signature segment (unsigned token)") }
        guard let headerBytes = Base64URL.decode(segments[0]) else { throw .malformedToken("header is not strict base64url") }
        guard let payloadBytes = Base64URL.decode(segments[1]) else { throw .malformedToken("payload is not strict base64url") }
        guard let signature = Base64URL.decode(segments[2]) else { throw .malformedToken("signature is not strict base64url") }
        let limits = JSONLimits(maximumDepth: 16, maximumBytes: maximumBytes)
        do {
            guard let header = try JSONParser.parse(headerBytes, limits: limits).objectValue else {
                throw AuthenticationError.malformedToken("header is not a JSON object")
            }
            guard let payload = try JSONParser.parse(payloadBytes, limits: limits).objectValue else {
                throw AuthenticationError.malformedToken("payload is not a JSON object")
            }
            self.header = header
            self.payload = payload
        } catch let error as AuthenticationError {
            throw error
        } catch {
            throw .malformedToken("\(error)")
        }
        guard header["crit"] == nil else { throw .malformedToken("critical header extensions are not supported") }
        self.signingInput = Array(bytes[..<(segments[1].endIndex)])
        self.signature = signature
    }
}

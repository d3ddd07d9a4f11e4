/// A key that signs JWTs (for `mcpgw issue-token` and tests): an HMAC secret or a PEM private key.
public struct JWTSigningKey: Sendable {
    enum Material: Sendable {
        case secret([UInt8])
        case privateKey(EVPKey)
    }

    /// The algorithm this key signs with.
    public let algorithm: JWTAlgorithm
    let material: Material

    /// An HS256 signing key (at least 32 bytes).
    public static func hmac(secret: [UInt8]) throws(JWTKeyError) -> JWTSigningKey {
        guard secret.count >= JWTVerificationKey.minimumSecretBytes else {
            throw .unsuitable("HS256 secrets must be at least \(JWTVerificationKey.minimumSecretBytes) bytes")
        }
        return JWTSigningKey(algorithm: .hs256, material: .secret(secret))
    }

    /// A signing key from a PEM private key; the algorithm follows from the key type.
    public static func privateKey(pem: [UInt8], algorithm: JWTAlgorithm? = nil) throws(JWTKeyError) -> JWTSigningKey {
        guard let key = EVPKey.readPEM(pem, privateKey: true) else { throw .invalid("not a PEM private key") }
        let natural = try key.algorithm().get()
        if let algorithm, algorithm != natural { throw .algorithmMismatch(key: "\(natural.rawValue)-type", requested: algorithm) }
        return JWTSigningKey(algorithm: natural, material: .privateKey(key))
    }

    /// The JWS signature of `signingInput` (raw `r || s` for ES256).
    public func sign(_ signingInput: [UInt8]) throws(JWTKeyError) -> [UInt8] {
        switch (algorithm, material) {
        case (.hs256, .secret(let secret)):
            return JWSCrypto.hmacSHA256(secret: secret, data: signingInput)
        case (.es256, .privateKey(let key)):
            guard let der = JWSCrypto.sign(key: key, sha256: true, data: signingInput), let raw = JWSCrypto.ecdsaRaw(fromDER: der)
            else { throw .invalid("ECDSA signing failed") }
            return raw
        case (.rs256, .privateKey(let key)), (.edDSA, .privateKey(let key)):
            guard let signature = JWSCrypto.sign(key: key, sha256: algorithm == .rs256, data: signingInput) else {
                throw .invalid("\(algorithm.rawValue) signing failed")
            }
            return signature
        default:
            throw .invalid("key material does not fit \(algorithm.rawValue)")
        }
    }
}

public import StrictJSON

/// A key that verifies JWT signatures. Its algorithm is fixed when it is created; a token's `alg` header can only
/// be checked against it, never choose it. An HMAC secret and a public key are different kinds of material, so an
/// RSA public key can never be used as an HMAC secret.
public struct JWTVerificationKey: Sendable {
    enum Material: Sendable {
        case secret([UInt8])
        case publicKey(EVPKey)
    }

    /// The key id (`kid`) tokens name to select this key.
    public let keyID: String?
    /// The only algorithm this key verifies.
    public let algorithm: JWTAlgorithm
    let material: Material

    /// Smallest HMAC secret accepted: 256 bits (RFC 7518 §3.2).
    public static let minimumSecretBytes = 32

    /// An HS256 key from a shared secret of at least 32 bytes.
    public static func hmac(secret: [UInt8], keyID: String?) throws(JWTKeyError) -> JWTVerificationKey {
        guard secret.count >= minimumSecretBytes else {
            throw .unsuitable("HS256 secrets must be at least \(minimumSecretBytes) bytes, this one has \(secret.count)")
        }
        return JWTVerificationKey(keyID: keyID, algorithm: .hs256, material: .secret(secret))
    }

    /// A key from a PEM public key (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA). If `algorithm` is given it must
    /// agree with the key type.
    public static func publicKey(pem: [UInt8], keyID: String?, algorithm: JWTAlgorithm? = nil) throws(JWTKeyError) -> JWTVerificationKey {
        guard let key = EVPKey.readPEM(pem, privateKey: false) else {
            throw .invalid("not a PEM public key (-----BEGIN PUBLIC KEY-----)")
        }
        return try make(key, keyID: keyID, algorithm: algorithm)
    }

    static func make(_ key: EVPKey, keyID: String?, algorithm: JWTAlgorithm?) throws(JWTKeyError) -> JWTVerificationKey {
        let natural = try key.algorithm().get()
        if let algorithm, algorithm != natural {
            throw .algorithmMismatch(key: natural == .rs256 ? "RSA" : natural == .es256 ? "P-256" : "Ed25519", requested: algorithm)
        }
        return JWTVerificationKey(keyID: keyID, algorithm: natural, material: .publicKey(key))
    }

    /// Whether `other` is the same key: the same id, algorithm and material (a public key compared by its parameters).
    public func isSameKey(as other: JWTVerificationKey) -> Bool {
        keyID == other.keyID && algorithm == other.algorithm && hasSameMaterial(as: other)
    }

    /// Whether `other` holds the same material (the secret's bytes, or the public key's parameters), whatever its id.
    public func hasSameMaterial(as other: JWTVerificationKey) -> Bool {
        switch (material, other.material) {
        case (.secret(let mine), .secret(let theirs)): return mine == theirs
        case (.publicKey(let mine), .publicKey(let theirs)): return mine.hasSameParameters(as: theirs)
        default: return false
        }
    }

    /// Whether `jws` names this key's algorithm and carries a valid signature under it (no claim checks).
    public func verifies(_ jws: CompactJWS) -> Bool {
        jws.algorithmName == algorithm.rawValue && verify(signature: jws.signature, signingInput: jws.signingInput)
    }

    /// Whether `signature` is a valid signature of `signingInput` under this key.
    func verify(signature: [UInt8], signingInput: [UInt8]) -> Bool {
        switch (algorithm, material) {
        case (.hs256, .secret(let secret)):
            return JWSCrypto.constantTimeEqual(JWSCrypto.hmacSHA256(secret: secret, data: signingInput), signature)
        case (.rs256, .publicKey(let key)):
            return JWSCrypto.verify(key: key, sha256: true, signature: signature, data: signingInput)
        case (.es256, .publicKey(let key)):
            guard let der = JWSCrypto.ecdsaDER(fromRaw: signature) else { return false }
            return JWSCrypto.verify(key: key, sha256: true, signature: der, data: signingInput)
        case (.edDSA, .publicKey(let key)):
            return JWSCrypto.verify(key: key, sha256: false, signature: signature, data: signingInput)
        default:
            return false
        }
    }
}

extension JWTVerificationKey {
    /// A key from one JWK (RFC 7517): `RSA` (n, e), `EC` P-256 (x, y), `OKP` Ed25519 (x) or `oct` (k).
    /// A JWK `alg`, when present, must agree with the key type; private members are refused.
    public static func jwk(_ object: JSONObject) throws(JWTKeyError) -> JWTVerificationKey {
        func member(_ name: String) throws(JWTKeyError) -> [UInt8] {
            guard let text = object[name]?.stringValue, let bytes = Base64URL.decode(text), !bytes.isEmpty else {
                throw .invalid("JWK member '\(name)' is missing or not base64url")
            }
            return bytes
        }
        let keyID = object["kid"]?.stringValue
        var algorithm: JWTAlgorithm?
        if let alg = object["alg"] {
            guard let text = alg.stringValue, let parsed = JWTAlgorithm(rawValue: text) else {
                throw .unsuitable("JWK alg \(alg.serialized) is not one of \(JWTAlgorithm.allCases.map(\.rawValue))")
            }
            algorithm = parsed
        }
        if let use = object["use"]?.stringValue, use != "sig" { throw .unsuitable("JWK use '\(use)' is not 'sig'") }
        for privateMember in ["d", "p", "q", "dp", "dq", "qi"] where object[privateMember] != nil && object["kty"]?.stringValue != "oct" {
            throw .invalid("JWK carries private member '\(privateMember)'; configure public keys only")
        }
        switch object["kty"]?.stringValue {
        case "oct":
            let key = try hmac(secret: try member("k"), keyID: keyID)
            if let algorithm, algorithm != .hs256 { throw .algorithmMismatch(key: "oct", requested: algorithm) }
            return key
        case "RSA":
            let n = try member("n"), e = try member("e")
            guard let key = JWSCrypto.publicKey(type: "RSA", build: { $0.bigNumber("n", n) && $0.bigNumber("e", e) }) else {
                throw .invalid("RSA JWK parameters are not a valid key")
            }
            return try make(key, keyID: keyID, algorithm: algorithm)
        case "EC":
            guard object["crv"]?.stringValue == "P-256" else { throw .unsuitable("EC JWKs must use crv P-256") }
            let x = try member("x"), y = try member("y")
            guard x.count == 32, y.count == 32,
                let key = JWSCrypto.publicKey(type: "EC", build: { $0.text("group", "prime256v1") && $0.octets("pub", [0x04] + x + y) })
            else { throw .invalid("EC JWK coordinates are not a point on P-256") }
            return try make(key, keyID: keyID, algorithm: algorithm)
        case "OKP":
            guard object["crv"]?.stringValue == "Ed25519" else { throw .unsuitable("OKP JWKs must use crv Ed25519") }
            let x = try member("x")
            guard x.count == 32, let key = JWSCrypto.publicKey(type: "ED25519", build: { $0.octets("pub", x) }) else {
                throw .invalid("Ed25519 JWK member 'x' is not a 32-byte public key")
            }
            return try make(key, keyID: keyID, algorithm: algorithm)
        default:
            throw .unsuitable("JWK kty must be RSA, EC, OKP or oct")
        }
    }

    /// Every key of a JWK Set document (`{"keys":[...]}`); each key must have a `kid`.
    public static func jwks(_ document: [UInt8]) throws(JWTKeyError) -> [JWTVerificationKey] {
        try jwks(document, skippingUnusable: false)
    }

    /// The keys of a JWKS document fetched from an identity provider: keys mcpgw cannot use for signatures (other
    /// key types, `"use": "enc"`, no `kid`) are skipped rather than failing the set, since providers publish them;
    /// so are shared secrets (`"kty": "oct"`), which a published set must never carry.
    /// Fails when the document is not a JWKS or holds no usable key.
    public static func jwks(_ document: [UInt8], skippingUnusable: Bool) throws(JWTKeyError) -> [JWTVerificationKey] {
        guard skippingUnusable else { return try strictJWKS(document) }
        guard let keys = (try? JSONParser.parse(document))?.objectValue?["keys"]?.arrayValue else {
            throw .invalid("not a JWKS (a JSON object with a 'keys' array)")
        }
        // Counted before any key is built (building thousands cost the fetcher's event loop a while).
        guard keys.count <= 4 * maximumFetchedKeys else {
            throw .invalid("the JWKS lists \(keys.count) keys (at most \(4 * maximumFetchedKeys), of which \(maximumFetchedKeys) usable)")
        }
        let usable = keys.compactMap { entry -> JWTVerificationKey? in
            // A shared secret has no place in a published key set: anyone who can read the set could sign with it.
            guard let object = entry.objectValue, object["kid"]?.stringValue != nil, object["use"]?.stringValue ?? "sig" == "sig",
                object["kty"]?.stringValue != "oct"
            else { return nil }
            return try? jwk(object)
        }
        guard !usable.isEmpty else { throw .invalid("the JWKS holds no usable signing key") }
        // Every key of a token's kid is tried for it, on the threads that check every tenant's fresh tokens: a set of
        // thousands of keys under one kid made each junk token cost a third of a second there, with no credentials
        // (found by review). Identity providers publish a handful.
        guard usable.count <= maximumFetchedKeys else {
            throw .invalid("the JWKS holds \(usable.count) usable signing keys (at most \(maximumFetchedKeys))")
        }
        var perKeyID: [String: Int] = [:]
        for key in usable {
            let count = (perKeyID[key.keyID ?? ""] ?? 0) + 1
            perKeyID[key.keyID ?? ""] = count
            guard count <= maximumFetchedKeysPerID else {
                throw .invalid(
                    "the JWKS holds more than \(maximumFetchedKeysPerID) usable keys with kid '\((key.keyID ?? "").prefix(100))'")
            }
        }
        return usable
    }

    /// The most usable keys a fetched JWKS may hold (a larger one is refused, and the set in use kept).
    public static let maximumFetchedKeys = 64
    /// The most usable keys of one kid a fetched JWKS may hold (each is tried for a token of that kid).
    public static let maximumFetchedKeysPerID = 4

    private static func strictJWKS(_ document: [UInt8]) throws(JWTKeyError) -> [JWTVerificationKey] {
        let value: JSONValue
        do {
            value = try JSONParser.parse(document)
        } catch {
            throw .invalid("JWKS is not valid JSON: \(error)")
        }
        guard let keys = value.objectValue?["keys"]?.arrayValue else { throw .invalid("JWKS has no 'keys' array") }
        var result: [JWTVerificationKey] = []
        for (position, entry) in keys.enumerated() {
            guard let object = entry.objectValue else { throw .invalid("JWKS keys[\(position)] is not an object") }
            guard object["kid"]?.stringValue != nil else { throw .invalid("JWKS keys[\(position)] has no kid") }
            do {
                result.append(try jwk(object))
            } catch {
                throw .invalid("JWKS keys[\(position)]: \(error)")
            }
        }
        return result
    }
}

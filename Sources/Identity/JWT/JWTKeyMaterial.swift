internal import COpenSSL

/// An OpenSSL `EVP_PKEY`, freed with its owner.
///
/// `@unchecked Sendable`: the key is never mutated after creation, and OpenSSL allows concurrent use of one
/// `EVP_PKEY` by separate `EVP_MD_CTX`s, which is how every verification uses it.
final class EVPKey: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) { self.pointer = pointer }

    deinit { EVP_PKEY_free(pointer) }

    /// Reads a PEM public key (SubjectPublicKeyInfo) or, when `privateKey`, a PEM private key.
    static func readPEM(_ pem: [UInt8], privateKey: Bool) -> EVPKey? {
        OpenSSLErrorDrain.clear()
        guard let bio = pem.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else { return nil }
        defer { BIO_free(bio) }
        let key = privateKey ? PEM_read_bio_PrivateKey(bio, nil, nil, nil) : PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        OpenSSLErrorDrain.clear()
        return key.map(EVPKey.init)
    }

    /// Whether `other` is the same public key (`EVP_PKEY_eq`: type and parameters).
    func hasSameParameters(as other: EVPKey) -> Bool {
        defer { OpenSSLErrorDrain.clear() }
        return EVP_PKEY_eq(pointer, other.pointer) == 1
    }

    /// `EVP_PKEY_RSA`, `EVP_PKEY_EC`, `EVP_PKEY_ED25519`...
    var baseID: Int32 { EVP_PKEY_get_base_id(pointer) }
    /// Key size in bits.
    var bits: Int { Int(EVP_PKEY_get_bits(pointer)) }
    /// For EC keys, the curve's short name (`prime256v1`).
    var groupName: String? {
        var name = [CChar](repeating: 0, count: 64)
        var length = 0
        guard EVP_PKEY_get_group_name(pointer, &name, name.count, &length) == 1 else { return nil }
        return String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The algorithm this key can serve, or why it cannot serve any. Keys anyone can forge signatures for are refused:
    /// an RSA public exponent that is even or below 3 (with e = 1 the "signature" is the padded hash itself), and an
    /// Ed25519 point of small order (the identity point accepts one signature for every message).
    func algorithm() -> Result<JWTAlgorithm, JWTKeyError> {
        if baseID == CMCPGW_EVP_PKEY_RSA() {
            guard bits >= 2048 else { return .failure(.unsuitable("RSA keys must have at least 2048 bits, this one has \(bits)")) }
            // Upper bounds too: a check's cost grows with the modulus and the exponent, and a tenant's key (or its
            // JWKS) with huge ones would make every junk-signature token cost milliseconds on the pool all tenants
            // share (found by review: a 3060-bit exponent, 300 times the usual cost).
            guard bits <= Self.maximumRSABits else {
                return .failure(.unsuitable("RSA keys must have at most \(Self.maximumRSABits) bits, this one has \(bits)"))
            }
            guard rsaExponentIsSound else {
                return .failure(.unsuitable("the RSA public exponent must be odd, at least 3 and below 2^32 (65537 is usual)"))
            }
            return .success(.rs256)
        }
        if baseID == CMCPGW_EVP_PKEY_EC() {
            return groupName == "prime256v1"
                ? .success(.es256) : .failure(.unsuitable("EC keys must be on P-256, this one is on \(groupName ?? "an unknown curve")"))
        }
        if baseID == CMCPGW_EVP_PKEY_ED25519() {
            guard let point = rawPublicKey, point.count == 32, !Self.hasSmallOrder(point) else {
                return .failure(.unsuitable("the Ed25519 public key is a point of small order"))
            }
            return .success(.edDSA)
        }
        return .failure(.unsuitable("unsupported key type"))
    }

    /// The largest RSA modulus accepted, in bits.
    static let maximumRSABits = 8192

    /// Whether an RSA key's public exponent is odd, at least 3 and below 2^32.
    private var rsaExponentIsSound: Bool {
        var exponent: OpaquePointer?
        guard EVP_PKEY_get_bn_param(pointer, "e", &exponent) == 1, let exponent else {
            OpenSSLErrorDrain.clear()
            return false
        }
        defer { BN_free(exponent) }
        return BN_is_odd(exponent) == 1 && BN_num_bits(exponent) >= 2 && BN_num_bits(exponent) <= 32
    }

    /// The raw public key (Ed25519: the 32-byte point encoding).
    private var rawPublicKey: [UInt8]? {
        var length = 0
        guard EVP_PKEY_get_raw_public_key(pointer, nil, &length) == 1, length <= 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: length)
        guard EVP_PKEY_get_raw_public_key(pointer, &bytes, &length) == 1 else { return nil }
        return Array(bytes.prefix(length))
    }

    /// Whether the Ed25519 point encoding `point` is one of small order (the sign bit ignored), as libsodium's list
    /// has them: 0 and 1 (and their non-canonical spellings p and p + 1), p − 1, and the two points of order 8.
    static func hasSmallOrder(_ point: [UInt8]) -> Bool {
        let high = [UInt8](repeating: 0xFF, count: 30)
        let blocked: [[UInt8]] = [
            [UInt8](repeating: 0, count: 32),
            [0x01] + [UInt8](repeating: 0, count: 31),
            [
                0xC7, 0x17, 0x6A, 0x70, 0x3D, 0x4D, 0xD8, 0x4F, 0xBA, 0x3C, 0x0B, 0x76, 0x0D, 0x10, 0x67, 0x0F, 0x2A, 0x20, 0x53, 0xFA,
                0x2C, 0x39, 0xCC, 0xC6, 0x4E, 0xC7, 0xFD, 0x77, 0x92, 0xAC, 0x03, 0x7A,
            ],
            [
                0x26, 0xE8, 0x95, 0x8F, 0xC2, 0xB2, 0x27, 0xB0, 0x45, 0xC3, 0xF4, 0x89, 0xF2, 0xEF, 0x98, 0xF0, 0xD5, 0xDF, 0xAC, 0x05,
                0xD3, 0xC6, 0x33, 0x39, 0xB1, 0x38, 0x02, 0x88, 0x6D, 0x53, 0xFC, 0x05,
            ],
            [0xEC] + high + [0x7F],
            [0xED] + high + [0x7F],
            [0xEE] + high + [0x7F],
        ]
        var unsigned = point
        unsigned[31] &= 0x7F
        return blocked.contains(unsigned)
    }
}

/// Clears OpenSSL's error queue around calls whose failure is reported by return value alone.
enum OpenSSLErrorDrain {
    static func clear() { ERR_clear_error() }
}

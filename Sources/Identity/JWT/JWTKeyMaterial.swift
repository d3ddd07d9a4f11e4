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

    /// The algorithm this key can serve, or why it cannot serve any.
    func algorithm() -> Result<JWTAlgorithm, JWTKeyError> {
        if baseID == CMCPGW_EVP_PKEY_RSA() {
            return bits >= 2048 ? .success(.rs256) : .failure(.unsuitable("RSA keys must have at least 2048 bits, this one has \(bits)"))
        }
        if baseID == CMCPGW_EVP_PKEY_EC() {
            return groupName == "prime256v1"
                ? .success(.es256) : .failure(.unsuitable("EC keys must be on P-256, this one is on \(groupName ?? "an unknown curve")"))
        }
        if baseID == CMCPGW_EVP_PKEY_ED25519() { return .success(.edDSA) }
        return .failure(.unsuitable("unsupported key type"))
    }
}

/// Clears OpenSSL's error queue around calls whose failure is reported by return value alone.
enum OpenSSLErrorDrain {
    static func clear() { ERR_clear_error() }
}

internal import COpenSSL

/// The libcrypto operations behind JWS signatures.
enum JWSCrypto {
    /// HMAC-SHA-256 of `data` under `secret`.
    static func hmacSHA256(secret: [UInt8], data: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        data.withUnsafeBytes { bytes in
            _ = HMAC(
                EVP_sha256(), secret, Int32(secret.count), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                bytes.count, &output, &length)
        }
        return output
    }

    /// Compares without leaking, through timing, where the first difference is.
    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        lhs.count == rhs.count && CRYPTO_memcmp(lhs, rhs, lhs.count) == 0
    }

    /// Verifies `signature` (in OpenSSL's format: DER for ECDSA) over `data` with a digest (nil for Ed25519).
    static func verify(key: EVPKey, sha256 useSHA256: Bool, signature: [UInt8], data: [UInt8]) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        OpenSSLErrorDrain.clear()
        defer { OpenSSLErrorDrain.clear() }
        guard EVP_DigestVerifyInit(context, nil, useSHA256 ? EVP_sha256() : nil, nil, key.pointer) == 1 else { return false }
        return data.withUnsafeBytes { bytes in
            EVP_DigestVerify(context, signature, signature.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count) == 1
        }
    }

    /// Signs `data` (DER output for ECDSA).
    static func sign(key: EVPKey, sha256 useSHA256: Bool, data: [UInt8]) -> [UInt8]? {
        guard let context = EVP_MD_CTX_new() else { return nil }
        defer { EVP_MD_CTX_free(context) }
        OpenSSLErrorDrain.clear()
        defer { OpenSSLErrorDrain.clear() }
        guard EVP_DigestSignInit(context, nil, useSHA256 ? EVP_sha256() : nil, nil, key.pointer) == 1 else { return nil }
        return data.withUnsafeBytes { bytes -> [UInt8]? in
            let input = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
            var length = 0
            guard EVP_DigestSign(context, nil, &length, input, bytes.count) == 1 else { return nil }
            var signature = [UInt8](repeating: 0, count: length)
            guard EVP_DigestSign(context, &signature, &length, input, bytes.count) == 1 else { return nil }
            return Array(signature.prefix(length))
        }
    }

    /// JWS ES256 signatures are `r || s` (32 bytes each); OpenSSL wants DER.
    static func ecdsaDER(fromRaw raw: [UInt8]) -> [UInt8]? {
        guard raw.count == 64, let signature = ECDSA_SIG_new() else { return nil }
        defer { ECDSA_SIG_free(signature) }
        guard let r = BN_bin2bn(raw, 32, nil), let s = BN_bin2bn(Array(raw[32...]), 32, nil) else { return nil }
        guard ECDSA_SIG_set0(signature, r, s) == 1 else {
            BN_free(r)
            BN_free(s)
            return nil
        }
        let length = i2d_ECDSA_SIG(signature, nil)
        guard length > 0 else { return nil }
        var der = [UInt8](repeating: 0, count: Int(length))
        der.withUnsafeMutableBufferPointer { buffer in
            var cursor = buffer.baseAddress
            _ = i2d_ECDSA_SIG(signature, &cursor)
        }
        return der
    }

    /// DER ECDSA signature → JWS `r || s`.
    static func ecdsaRaw(fromDER der: [UInt8]) -> [UInt8]? {
        var cursor: UnsafePointer<UInt8>? = nil
        return der.withUnsafeBufferPointer { buffer -> [UInt8]? in
            cursor = buffer.baseAddress
            guard let signature = d2i_ECDSA_SIG(nil, &cursor, der.count) else { return nil }
            defer { ECDSA_SIG_free(signature) }
            var r: OpaquePointer? = nil
            var s: OpaquePointer? = nil
            ECDSA_SIG_get0(signature, &r, &s)
            var raw = [UInt8](repeating: 0, count: 64)
            guard let r, let s, BN_bn2binpad(r, &raw, 32) == 32 else { return nil }
            let ok = raw.withUnsafeMutableBufferPointer { BN_bn2binpad(s, $0.baseAddress! + 32, 32) == 32 }
            return ok ? raw : nil
        }
    }

    /// Collects OpenSSL key parameters. `OSSL_PARAM_BLD` keeps pointers to the parameter names and big numbers
    /// (it copies neither) until `OSSL_PARAM_BLD_to_param`, so this builder owns C copies of both and frees them
    /// only when it is released.
    final class ParameterBuilder {
        let pointer: OpaquePointer
        private var numbers: [OpaquePointer] = []
        private var names: [UnsafeMutablePointer<CChar>] = []

        init?() {
            guard let builder = OSSL_PARAM_BLD_new() else { return nil }
            pointer = builder
        }

        deinit {
            OSSL_PARAM_BLD_free(pointer)
            numbers.forEach { BN_free($0) }
            names.forEach { free($0) }
        }

        /// A C copy of `name` that lives as long as the builder.
        private func keep(_ name: String) -> UnsafeMutablePointer<CChar> {
            let copy = strdup(name)!
            names.append(copy)
            return copy
        }

        /// Adds a big-endian unsigned integer.
        func bigNumber(_ name: String, _ bytes: [UInt8]) -> Bool {
            guard let number = BN_bin2bn(bytes, Int32(bytes.count), nil) else { return false }
            numbers.append(number)
            return OSSL_PARAM_BLD_push_BN(pointer, keep(name), number) == 1
        }

        /// Adds an octet string (the value is copied).
        func octets(_ name: String, _ bytes: [UInt8]) -> Bool {
            OSSL_PARAM_BLD_push_octet_string(pointer, keep(name), bytes, bytes.count) == 1
        }

        /// Adds a UTF-8 string.
        func text(_ name: String, _ text: String) -> Bool {
            OSSL_PARAM_BLD_push_utf8_string(pointer, keep(name), keep(text), 0) == 1
        }
    }

    /// A public key of OpenSSL key type `type` (`RSA`, `EC`, `ED25519`) from parameters (used for JWKs).
    static func publicKey(type: String, build: (ParameterBuilder) -> Bool) -> EVPKey? {
        guard let builder = ParameterBuilder(), build(builder) else { return nil }
        // The builder (and the big numbers it references) must stay alive until the parameters are built.
        return withExtendedLifetime(builder) { () -> EVPKey? in
            guard let parameters = OSSL_PARAM_BLD_to_param(builder.pointer) else { return nil }
            defer { OSSL_PARAM_free(parameters) }
            guard let context = EVP_PKEY_CTX_new_from_name(nil, type, nil) else { return nil }
            defer { EVP_PKEY_CTX_free(context) }
            OpenSSLErrorDrain.clear()
            defer { OpenSSLErrorDrain.clear() }
            var key: OpaquePointer? = nil
            guard EVP_PKEY_fromdata_init(context) == 1,
                EVP_PKEY_fromdata(context, &key, CMCPGW_EVP_PKEY_PUBLIC_KEY(), parameters) == 1, let key
            else { return nil }
            return EVPKey(key)
        }
    }
}

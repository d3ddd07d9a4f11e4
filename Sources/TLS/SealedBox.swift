import COpenSSL

/// Authenticated encryption (AES-256-GCM, OpenSSL) under named keys: what the gateway hands to clients and must get
/// back unaltered — session handles and SSE event ids — is sealed so that it can be neither read nor forged, and any
/// process holding the same keys can open it. The first key seals; every key opens (rotation: add the new key first,
/// keep the old one until what it sealed has expired).
public struct SealedBox: Sendable {
    /// A named 256-bit key.
    public struct Key: Sendable {
        /// The key's name, carried next to what it sealed.
        public let id: String
        /// 32 bytes.
        public let bytes: [UInt8]

        /// A key; nil unless `bytes` is 32 bytes long and `id` is 1–32 letters, digits, `-` or `_`.
        public init?(id: String, bytes: [UInt8]) {
            guard bytes.count == 32, (1...32).contains(id.utf8.count),
                id.utf8.allSatisfy({ $0.isASCIILetterOrDigit || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
            else { return nil }
            self.id = id
            self.bytes = bytes
        }

        /// A fresh random key (for a single process when none is configured).
        public static func random(id: String) -> Key {
            var bytes = [UInt8](repeating: 0, count: 32)
            // RAND_bytes fails only when the system has no entropy source; a gateway must not run then.
            guard RAND_bytes(&bytes, 32) == 1 else { fatalError("RAND_bytes failed: no entropy for a sealing key") }
            return Key(id: id, bytes: bytes)!
        }
    }

    /// The keys, the sealing key first.
    public let keys: [Key]

    /// A box with `keys` (at least one; the first seals).
    public init(keys: [Key]) {
        precondition(!keys.isEmpty, "a SealedBox needs a key")
        self.keys = keys
    }

    /// The id of the sealing key, and nonce ‖ ciphertext ‖ tag of `plaintext`, bound to `context` (authenticated, not
    /// encrypted: what is sealed for one purpose does not open for another).
    public func seal(_ plaintext: [UInt8], context: [UInt8]) -> (keyID: String, sealed: [UInt8]) {
        let key = keys[0]
        var nonce = [UInt8](repeating: 0, count: 12)
        guard RAND_bytes(&nonce, 12) == 1 else { fatalError("RAND_bytes failed: no entropy for a nonce") }
        guard let sealed = Self.crypt(encrypt: true, key: key.bytes, nonce: nonce, input: plaintext, context: context, tag: nil)
        else { fatalError("AES-256-GCM sealing failed: \(OpenSSLErrorQueue.drain())") }
        return (key.id, nonce + sealed.output + sealed.tag)
    }

    /// The plaintext of `sealed` under the key named `keyID`, or nil when the key is unknown or the bytes were not
    /// sealed with it for `context` (altered, truncated, or forged).
    public func open(_ sealed: [UInt8], keyID: String, context: [UInt8]) -> [UInt8]? {
        guard sealed.count >= 28, let key = keys.first(where: { $0.id == keyID }) else { return nil }
        let nonce = Array(sealed[0..<12])
        let body = Array(sealed[12..<(sealed.count - 16)])
        let tag = Array(sealed[(sealed.count - 16)...])
        let opened = Self.crypt(encrypt: false, key: key.bytes, nonce: nonce, input: body, context: context, tag: tag)
        OpenSSLErrorQueue.clear()
        return opened?.output
    }

    private static func crypt(
        encrypt: Bool, key: [UInt8], nonce: [UInt8], input: [UInt8], context: [UInt8], tag: [UInt8]?
    ) -> (output: [UInt8], tag: [UInt8])? {
        guard let ctx = EVP_CIPHER_CTX_new() else { return nil }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let initialise = encrypt ? EVP_EncryptInit_ex : EVP_DecryptInit_ex
        guard initialise(ctx, EVP_aes_256_gcm(), nil, nil, nil) == 1,
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, nil) == 1,
            initialise(ctx, nil, nil, key, nonce) == 1
        else { return nil }
        let update = encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate
        var length: Int32 = 0
        if !context.isEmpty {
            guard update(ctx, nil, &length, context, Int32(context.count)) == 1 else { return nil }
        }
        var output = [UInt8](repeating: 0, count: input.count + 16)
        var written: Int32 = 0
        if !input.isEmpty {
            guard update(ctx, &output, &written, input, Int32(input.count)) == 1 else { return nil }
        }
        if encrypt {
            var final: Int32 = 0
            guard output.withUnsafeMutableBufferPointer({ EVP_EncryptFinal_ex(ctx, $0.baseAddress! + Int(written), &final) }) == 1
            else { return nil }
            var tag = [UInt8](repeating: 0, count: 16)
            guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, &tag) == 1 else { return nil }
            return (Array(output[0..<Int(written + final)]), tag)
        }
        var expected = tag!
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, &expected) == 1 else { return nil }
        var final: Int32 = 0
        guard output.withUnsafeMutableBufferPointer({ EVP_DecryptFinal_ex(ctx, $0.baseAddress! + Int(written), &final) }) == 1
        else { return nil }
        return (Array(output[0..<Int(written + final)]), [])
    }
}

extension UInt8 {
    fileprivate var isASCIILetterOrDigit: Bool {
        (self >= 0x30 && self <= 0x39) || (self >= 0x41 && self <= 0x5A) || (self >= 0x61 && self <= 0x7A)
    }
}

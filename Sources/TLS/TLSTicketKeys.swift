internal import COpenSSL
import Synchronization

/// The keys that protect session tickets, shared by every server context of the process, so that a ticket issued
/// before a TLS reload still resumes after it. The current key encrypts new tickets; it is replaced on a schedule,
/// and the key before it still decrypts (and renews) tickets for one more period. Older tickets get a full handshake.
///
/// Written by hand over OpenSSL's ticket-key callback: OpenSSL's own ticket keys are made per `SSL_CTX` and never
/// rotate.
public final class TLSTicketKeys: Sendable {
    struct Key: Sendable {
        let name: [UInt8]
        let cipherKey: [UInt8]
        let macKey: [UInt8]
        let created: ContinuousClock.Instant
    }

    /// The process's ticket keys.
    public static let shared = TLSTicketKeys(rotation: .seconds(12 * 3600))

    private let keys: Mutex<[Key]>
    private let rotation: Mutex<Duration>

    init(rotation: Duration) {
        self.rotation = Mutex(rotation)
        keys = Mutex([Self.newKey()])
    }

    /// How long a key encrypts new tickets (default 12 hours); tickets stay valid for up to twice that.
    public var rotationInterval: Duration {
        get { rotation.withLock { $0 } }
        set { rotation.withLock { $0 = newValue } }
    }

    /// Starts a new key now; the current one keeps decrypting for one more period.
    public func rotate() {
        keys.withLock { keys in keys = [Self.newKey(), keys[0]] }
    }

    /// The key for a new ticket (rotating first when the current one is due).
    func encryptionKey() -> Key {
        let interval = rotationInterval
        return keys.withLock { keys in
            if keys[0].created.duration(to: .now) >= interval { keys = [Self.newKey(), keys[0]] }
            return keys[0]
        }
    }

    /// The key named `name`, and whether it is the current one (otherwise the ticket is renewed).
    func decryptionKey(named name: UnsafeBufferPointer<UInt8>) -> (key: Key, current: Bool)? {
        keys.withLock { keys in
            for (index, key) in keys.enumerated() where key.name.elementsEqual(name) { return (key, index == 0) }
            return nil
        }
    }

    private static func newKey() -> Key {
        func random(_ count: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            // RAND_bytes fails only when the system has no entropy source; a gateway must not run then.
            guard RAND_bytes(&bytes, Int32(count)) == 1 else { fatalError("RAND_bytes failed: no entropy for session-ticket keys") }
            return bytes
        }
        return Key(name: random(16), cipherKey: random(32), macKey: random(32), created: .now)
    }
}

/// OpenSSL's session-ticket callback: `encrypt` 1 for a new ticket, 0 to open one. Returns 1 (use), 2 (use and
/// renew), 0 (unknown key: full handshake) or -1 (error).
let ticketKeyCallback:
    @convention(c) (
        OpaquePointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?, OpaquePointer?, OpaquePointer?, Int32
    ) -> Int32 = { _, name, iv, cipherContext, macContext, encrypt in
        guard let name, let iv, let cipherContext, let macContext else { return -1 }
        let keys = TLSTicketKeys.shared
        if encrypt == 1 {
            let key = keys.encryptionKey()
            name.update(from: key.name, count: 16)
            guard RAND_bytes(iv, 16) == 1,
                EVP_EncryptInit_ex(cipherContext, EVP_aes_256_cbc(), nil, key.cipherKey, iv) == 1,
                setTicketMAC(macContext, key.macKey)
            else { return -1 }
            return 1
        }
        guard let (key, current) = keys.decryptionKey(named: UnsafeBufferPointer(start: name, count: 16)) else { return 0 }
        guard EVP_DecryptInit_ex(cipherContext, EVP_aes_256_cbc(), nil, key.cipherKey, iv) == 1, setTicketMAC(macContext, key.macKey)
        else { return -1 }
        return current ? 1 : 2
    }

/// HMAC-SHA256 with `key` on the ticket's MAC context.
private func setTicketMAC(_ context: OpaquePointer, _ key: [UInt8]) -> Bool {
    var key = key
    var digest = Array("SHA256".utf8CString)
    return key.withUnsafeMutableBytes { keyBytes in
        digest.withUnsafeMutableBufferPointer { digestName in
            "key".withCString { keyParameter in
                "digest".withCString { digestParameter in
                    var parameters = [
                        OSSL_PARAM_construct_octet_string(keyParameter, keyBytes.baseAddress, keyBytes.count),
                        OSSL_PARAM_construct_utf8_string(digestParameter, digestName.baseAddress, 0),
                        OSSL_PARAM_construct_end(),
                    ]
                    return EVP_MAC_CTX_set_params(context, &parameters) == 1
                }
            }
        }
    }
}

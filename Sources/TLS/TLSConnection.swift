internal import COpenSSL
import NIOCore

/// The outcome of one step of OpenSSL work on a connection.
enum TLSStep<Value> {
    /// The step finished with a value.
    case complete(Value)
    /// OpenSSL needs more bytes from the network before it can go on.
    case incomplete
    /// The peer sent close_notify: no more application data will arrive.
    case closed
    /// The connection is broken.
    case failed(TLSError)
}

/// One TLS connection: an OpenSSL `SSL` object over a `ByteBufferBIO`.
///
/// Ciphertext from the network goes in with `receive(_:)`; ciphertext for the network comes out of
/// `takeNetworkOutput(allocator:)`. Lives on one event loop inside one `TLSHandler`; never shared.
final class TLSConnection {
    let context: TLSContext
    private let ssl: OpaquePointer
    /// Ciphertext both ways, as `ByteBuffer`s. Declared after `ssl`'s owner logic: `deinit` frees the `SSL` (and
    /// with it the BIO) before this object is released.
    private let network: ByteBufferBIO

    init(context: TLSContext, serverHostname: String?) throws(TLSError) {
        OpenSSLErrorQueue.clear()
        guard let ssl = SSL_new(context.pointer) else {
            throw .invalidConfiguration("SSL_new failed", openSSL: OpenSSLErrorQueue.drain())
        }
        let network: ByteBufferBIO
        do {
            network = try ByteBufferBIO(allocator: ByteBufferAllocator())
        } catch {
            SSL_free(ssl)
            throw error
        }
        SSL_set_bio(ssl, network.bio, network.bio)  // the SSL object now owns the BIO's one reference
        self.context = context
        self.ssl = ssl
        self.network = network
        switch context.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let serverHostname {
                try expectServerName(serverHostname)
            }
        }
    }

    deinit {
        SSL_free(ssl)
    }

    private func expectServerName(_ name: String) throws(TLSError) {
        let isIPAddress = name.contains(":") || name.allSatisfy { $0.isNumber || $0 == "." }
        if isIPAddress {
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 else {
                throw .invalidConfiguration("invalid server address '\(name)'", openSSL: OpenSSLErrorQueue.drain())
            }
        } else {
            // The name must be in the certificate's subjectAltName: no fallback to the subject's CN (deprecated by
            // RFC 6125 and CA/B rules), and a wildcard only as a whole leftmost label.
            SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
            guard CMCPGW_SSL_set_tlsext_host_name(ssl, name) == 1, SSL_set1_host(ssl, name) == 1 else {
                throw .invalidConfiguration("invalid server name '\(name)'", openSSL: OpenSSLErrorQueue.drain())
            }
        }
    }

    /// Hands ciphertext from the network to OpenSSL.
    func receive(_ buffer: ByteBuffer) {
        network.receive(buffer)
    }

    /// Ciphertext that OpenSSL produced and that must be sent to the peer, if any.
    func takeNetworkOutput(allocator: ByteBufferAllocator) -> ByteBuffer? {
        network.takeOutbound(allocator: allocator)
    }

    /// Drives the handshake as far as the received bytes allow.
    func handshake() -> TLSStep<Void> {
        OpenSSLErrorQueue.clear()
        let result = SSL_do_handshake(ssl)
        if result == 1 { return .complete(()) }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .incomplete
        default:
            return .failed(handshakeError())
        }
    }

    private func handshakeError() -> TLSError {
        let errors = OpenSSLErrorQueue.drain()
        let verifyResult = SSL_get_verify_result(ssl)
        if verifyResult != X509_V_OK {
            let text = String(cString: X509_verify_cert_error_string(verifyResult))
            let whose = context.role == .server ? "client" : "server"
            return .handshakeFailed(
                reason: "\(whose) certificate refused: \(text) (X509 error \(verifyResult))", verifyError: text,
                openSSL: errors)
        }
        let reason = errors.last.map { Self.shortReason($0.reason) } ?? "the peer closed the connection"
        return .handshakeFailed(reason: reason, verifyError: nil, openSSL: errors)
    }

    /// `error:0A0000C7:SSL routines::peer did not return a certificate` → `peer did not return a certificate`.
    private static func shortReason(_ reason: String) -> String {
        guard let range = reason.range(of: "::", options: .backwards) else { return reason }
        return String(reason[range.upperBound...])
    }

    /// Decrypts application data into `buffer`, at most `limit` bytes. Room is made only for what can come out: the
    /// plaintext OpenSSL holds plus the ciphertext waiting (a small request no longer costs a 16 KiB buffer).
    func read(into buffer: inout ByteBuffer, limit: Int) -> TLSStep<Int> {
        let available = Int(SSL_pending(ssl)) + network.pendingInbound
        // Nothing decrypted and no bytes from the network: SSL_read could only say it wants more (a partial record
        // is kept inside OpenSSL until its rest arrives). Every read event ends with this call: skipping it saves an
        // SSL_read and an error-queue clear per request.
        if available == 0 && SSL_is_init_finished(ssl) == 1 { return .incomplete }
        OpenSSLErrorQueue.clear()
        let room = min(limit, max(available, 256))
        var status: Int32 = 0
        let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { target in
            status = SSL_read(ssl, target.baseAddress, Int32(min(room, target.count)))
            return Int(max(0, status))
        }
        if status > 0 { return .complete(count) }
        switch SSL_get_error(ssl, status) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .incomplete
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        default:
            let errors = OpenSSLErrorQueue.drain()
            let reason = errors.last.map { Self.shortReason($0.reason) } ?? "the connection broke"
            return .failed(.connectionFailed("read failed: \(reason)", openSSL: errors))
        }
    }

    /// Encrypts `bytes` entirely (the BIO never pushes back); the ciphertext waits in the network output.
    func write(_ bytes: UnsafeRawBufferPointer) -> TLSStep<Void> {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return .complete(()) }
        OpenSSLErrorQueue.clear()
        // Each 16 KiB record adds at most a header, a tag and padding (under 64 bytes with the AEAD suites allowed).
        network.reserveOutbound(bytes.count + (bytes.count / 16384 + 1) * 64)
        let status = SSL_write(ssl, base, Int32(bytes.count))
        if status == bytes.count { return .complete(()) }
        return .failed(.connectionFailed("write failed", openSSL: OpenSSLErrorQueue.drain()))
    }

    /// Queues our close_notify alert in the network output.
    func shutdown() {
        OpenSSLErrorQueue.clear()
        _ = SSL_shutdown(ssl)
        OpenSSLErrorQueue.clear()
    }

    /// The protocol version agreed so far (`unknown` before the server's hello).
    var negotiatedVersion: String {
        let version = String(cString: SSL_get_version(ssl))
        return version == "unknown" ? "unknown" : version
    }

    /// What was negotiated, and the verified peer certificate; valid after the handshake. With `trust`, the peer's
    /// certificate is verified again against that context's store (its CAs and CRLs as they are now): a connection
    /// that outlived a reload of its trust is held to the new one.
    func handshakeSummary(checkedAgainst trust: TLSContext? = nil) -> TLSHandshakeCompleted {
        let version = String(cString: SSL_get_version(ssl))
        let cipher = SSL_get_current_cipher(ssl).flatMap { SSL_CIPHER_get_name($0) }.map { String(cString: $0) } ?? ""
        var alpnPointer: UnsafePointer<UInt8>?
        var alpnLength: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &alpnPointer, &alpnLength)
        let alpn = alpnPointer.map { String(decoding: UnsafeBufferPointer(start: $0, count: Int(alpnLength)), as: UTF8.self) }
        let (certificate, refusal) = peerCertificate(checkedAgainst: trust)
        return TLSHandshakeCompleted(
            protocolVersion: version, cipherSuite: cipher, alpnProtocol: alpn, peerCertificate: certificate,
            sessionReused: SSL_session_reused(ssl) == 1, peerCertificateRefusal: refusal?.reason,
            refusedPeerCertificate: refusal?.certificate)
    }

    /// The peer's verified certificate, or why a certificate it presented does not verify (any more) and that
    /// certificate.
    private func peerCertificate(
        checkedAgainst trust: TLSContext?
    ) -> (PeerCertificate?, (reason: String, certificate: CertificateInfo)?) {
        guard SSL_get_verify_result(ssl) == X509_V_OK, let leaf = SSL_get0_peer_certificate(ssl) else { return (nil, nil) }
        let anchors = trust ?? context
        var chain: [CertificateInfo] = []
        if trust == nil, let verified = SSL_get0_verified_chain(ssl) {
            chain = Self.certificates(in: verified)
        } else if context.role == .server && (trust != nil || SSL_session_reused(ssl) == 1) {
            // A resumed session keeps the leaf and its old verify result but no chain, so nothing would say which CA
            // (hence which tenant) anchors it; and a connection open across a reload was verified against the old
            // trust. The leaf is verified again against the store as it is now: a certificate revoked, expired or no
            // longer anchored since then no longer names anyone — and the caller is told so, not served as no one.
            guard let reverified = reverifiedChain(leaf, against: anchors) else {
                let reason =
                    trust == nil
                    ? "the client certificate of the resumed TLS session no longer verifies (revoked, expired or its CA no longer trusted)"
                    : "the connection's client certificate no longer verifies against the reloaded trust (revoked, expired or its CA no longer trusted)"
                return (nil, (reason, X509Reader.info(leaf)))
            }
            chain = reverified
        }
        // A chain names its owner only when every trusted CA in it carries the same label (contexts refuse bundles
        // whose CAs issue one another, so this is a second line).
        let labels = Set(chain.compactMap { anchors.trustAnchorLabel(forFingerprint: $0.sha256Fingerprint) })
        let anchor = labels.count == 1 ? labels.first : nil
        return (PeerCertificate(leaf: X509Reader.info(leaf), verifiedChain: chain, trustAnchorLabel: anchor), nil)
    }

    private static func certificates(in stack: OpaquePointer) -> [CertificateInfo] {
        var chain: [CertificateInfo] = []
        for index in 0..<CMCPGW_sk_X509_num(stack) {
            if let certificate = CMCPGW_sk_X509_value(stack, index) { chain.append(X509Reader.info(certificate)) }
        }
        return chain
    }

    /// The chain of `leaf` verified now against `anchors`' store (its CAs and CRLs), for a client certificate; nil
    /// when it does not verify.
    private func reverifiedChain(_ leaf: OpaquePointer, against anchors: TLSContext) -> [CertificateInfo]? {
        guard let store = SSL_CTX_get_cert_store(anchors.pointer), let verification = X509_STORE_CTX_new() else { return nil }
        defer { X509_STORE_CTX_free(verification) }
        OpenSSLErrorQueue.clear()
        defer { OpenSSLErrorQueue.clear() }
        // The certificates the client sent after its leaf: on a connection resumed from a ticket, the ones kept in it.
        var sent = SSL_get_peer_cert_chain(ssl)
        var kept: OpaquePointer?
        if sent == nil || CMCPGW_sk_X509_num(sent) == 0 {
            kept = TicketChain.certificates(of: ssl)
            sent = kept
        }
        defer { if let kept { CMCPGW_sk_X509_pop_free(kept) } }
        guard X509_STORE_CTX_init(verification, store, leaf, sent) == 1 else { return nil }
        _ = X509_STORE_CTX_set_purpose(verification, X509_PURPOSE_SSL_CLIENT)
        X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(verification), Int32(anchors.configuration.verifyDepth))
        guard X509_verify_cert(verification) == 1, let verified = X509_STORE_CTX_get0_chain(verification) else { return nil }
        return Self.certificates(in: verified)
    }
}

/// Fired as a user inbound event by `TLSHandler` when a handshake completes.
public struct TLSHandshakeCompleted: Sendable, Hashable {
    /// `TLSv1.3` or `TLSv1.2`.
    public let protocolVersion: String
    /// The negotiated cipher suite in OpenSSL's naming.
    public let cipherSuite: String
    /// The ALPN protocol both ends agreed on, if ALPN was used.
    public let alpnProtocol: String?
    /// The peer's verified certificate; nil when the peer sent none (or none was requested).
    public let peerCertificate: PeerCertificate?
    /// Whether the session was resumed from an earlier one.
    public let sessionReused: Bool
    /// Set when the peer presented a certificate that does not verify now (a resumed session, or a connection open
    /// across a reload, whose certificate was revoked, expired or lost its CA since): the reason. `peerCertificate`
    /// is nil then, and the peer must be refused, not served as a caller without a certificate.
    public var peerCertificateRefusal: String?
    /// The certificate `peerCertificateRefusal` is about (for the record of the refusal: who it was).
    public var refusedPeerCertificate: CertificateInfo?
}

internal import COpenSSL

/// The intermediate certificates a client presented, kept in its session ticket.
///
/// A session resumed from a ticket keeps the client's leaf certificate but not the certificates it sent with it, and
/// the gateway verifies the leaf again on resumption (the verified chain names the tenant). A leaf issued by an
/// intermediate CA (root → issuing CA → agent, the usual enterprise layout) would then not verify, and every resumed
/// connection of such an agent would get 401. So the DER of those certificates travels inside the ticket, which the
/// gateway's ticket keys encrypt and authenticate: the client cannot change it, and the certificates are only
/// candidates for building the path, which must still end at a CA the store trusts.
enum TicketChain {
    /// Most bytes of certificates kept in one ticket.
    static let maximumBytes = 24 * 1024
    /// Most certificates kept in one ticket.
    static let maximumCertificates = 8

    /// OpenSSL's ticket-generation callback: stores the peer's chain (the certificates after its leaf) as the
    /// session's ticket data. A resumed connection has no chain of its own; its session, copied for the new ticket,
    /// already carries the data of the ticket it came from.
    static let generate: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { ssl, _ in
        guard let ssl, let session = SSL_get_session(ssl), let chain = SSL_get_peer_cert_chain(ssl) else { return 1 }
        let count = Int(CMCPGW_sk_X509_num(chain))
        guard count > 0 else { return 1 }
        var data: [UInt8] = []
        for index in 0..<min(count, maximumCertificates) {
            guard let certificate = CMCPGW_sk_X509_value(chain, Int32(index)) else { continue }
            let length = Int(i2d_X509(certificate, nil))
            guard length > 0, data.count + 4 + length <= maximumBytes else { break }
            data += [UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
            let start = data.count
            data += [UInt8](repeating: 0, count: length)
            let written = data.withUnsafeMutableBufferPointer { buffer -> Int32 in
                var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress! + start
                return i2d_X509(certificate, &cursor)
            }
            guard Int(written) == length else { return 1 }
        }
        _ = data.withUnsafeBytes { SSL_SESSION_set1_ticket_appdata(session, $0.baseAddress, $0.count) }
        return 1
    }

    /// The certificates kept in the ticket `ssl`'s session was resumed from, as a stack the caller frees with
    /// `CMCPGW_sk_X509_pop_free`; nil when there are none.
    static func certificates(of ssl: OpaquePointer) -> OpaquePointer? {
        guard let session = SSL_get_session(ssl) else { return nil }
        var pointer: UnsafeMutableRawPointer?
        var length = 0
        guard SSL_SESSION_get0_ticket_appdata(session, &pointer, &length) == 1, let pointer, length > 4 else { return nil }
        let bytes = UnsafeRawBufferPointer(start: pointer, count: min(length, maximumBytes)).bindMemory(to: UInt8.self)
        guard let stack = CMCPGW_sk_X509_new_null() else { return nil }
        var offset = 0
        while offset + 4 <= bytes.count, CMCPGW_sk_X509_num(stack) < maximumCertificates {
            let size = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            offset += 4
            guard size > 0, offset + size <= bytes.count else { break }
            var cursor: UnsafePointer<UInt8>? = bytes.baseAddress! + offset
            guard let certificate = d2i_X509(nil, &cursor, size) else { break }
            if CMCPGW_sk_X509_push(stack, certificate) <= 0 {
                X509_free(certificate)
                break
            }
            offset += size
        }
        guard CMCPGW_sk_X509_num(stack) > 0 else {
            CMCPGW_sk_X509_pop_free(stack)
            return nil
        }
        return stack
    }
}

internal import COpenSSL

/// The certificate store's CRL look-up: the CRLs OpenSSL would consider for a certificate's issuer, less every one
/// that no certificate of the chain being verified has signed.
///
/// OpenSSL picks the newest CRL that names a certificate's issuer and checks the CRL's signature only after choosing
/// it, so one CRL naming a CA, signed with any other key, would fail every chain through that CA ("CRL signature
/// failure"). The contexts load every tenant's CRLs into one store; a tenant could then lock out another tenant's
/// agents by listing a forged CRL under the name of that tenant's issuing CA. `TLSContext` refuses such a CRL at load
/// time when the CA it names is trusted there; an intermediate CA is known only from the chains clients send, so its
/// CRLs are checked here, against the chain: a CRL stays only when a certificate of the chain bears its issuer's name
/// and verifies its signature. With none left, the certificate has no CRL and its chain is refused (fail closed), as
/// when no CRL was ever given for that CA. Indirect CRLs (signed by another authority than the CA) are not supported.
///
/// A signature check per CRL would cost every full handshake one more (about 5 % of a full mutual-TLS handshake's
/// CPU time, measured with `openssl s_time -new`). The CRLs of the trusted CAs are checked once, when they are loaded (`TLSContext`); those
/// (CRL, CA) pairs are kept with the store (`Verified`), and a chain through that very CA certificate object needs no
/// check again. Both objects live as long as the store, which holds them, so their addresses name them.
enum SignedRevocationLists {
    /// The (CRL, CA certificate) pairs whose signature was checked when the store was loaded, by address.
    final class Verified: Sendable {
        struct Pair: Hashable, Sendable {
            let crl: UInt
            let issuer: UInt
        }
        let pairs: Set<Pair>

        init(_ pairs: Set<Pair>) { self.pairs = pairs }

        static func pair(crl: OpaquePointer, issuer: OpaquePointer) -> Pair {
            Pair(
                crl: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(crl))),
                issuer: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(issuer))))
        }
    }

    /// Installs the look-up on `store`, with the pairs checked at load time (owned by the store from now on).
    static func install(on store: OpaquePointer, verified: Verified) {
        X509_STORE_set_lookup_crls(store, lookUp)
        if exDataIndex >= 0 { _ = X509_STORE_set_ex_data(store, exDataIndex, Unmanaged.passRetained(verified).toOpaque()) }
    }

    /// The store's slot for its `Verified` pairs; released with the store.
    private static let exDataIndex: Int32 = CRYPTO_get_ex_new_index(
        CRYPTO_EX_INDEX_X509_STORE, 0, nil, nil, nil,
        { _, pointer, _, _, _, _ in
            if let pointer { Unmanaged<Verified>.fromOpaque(pointer).release() }
        })

    /// The look-up OpenSSL calls with the chain built and the issuer's name of the certificate it checks.
    private static let lookUp: X509_STORE_CTX_lookup_crls_fn = { context, issuerName in
        guard let found = X509_STORE_CTX_get1_crls(context, issuerName) else { return nil }
        let issuers = certificates(named: issuerName, in: X509_STORE_CTX_get0_chain(context))
        let verified = X509_STORE_CTX_get0_store(context).flatMap { store in
            X509_STORE_get_ex_data(store, exDataIndex).map { Unmanaged<Verified>.fromOpaque($0).takeUnretainedValue() }
        }
        // A failed verification leaves errors in the thread's queue, which the TLS handshake in progress would read
        // as its own.
        ERR_set_mark()
        defer { ERR_pop_to_mark() }
        var index = CMCPGW_sk_X509_CRL_num(found) - 1
        while index >= 0 {
            if let crl = CMCPGW_sk_X509_CRL_value(found, index),
                !issuers.contains(where: { issuer in
                    verified?.pairs.contains(Verified.pair(crl: crl, issuer: issuer)) == true
                        || X509_CRL_verify(crl, X509_get0_pubkey(issuer)) == 1
                })
            {
                X509_CRL_free(CMCPGW_sk_X509_CRL_delete(found, index))
            }
            index -= 1
        }
        return found
    }

    /// The certificates of `chain` whose subject is `name`.
    private static func certificates(named name: OpaquePointer?, in chain: OpaquePointer?) -> [OpaquePointer] {
        guard let name, let chain else { return [] }
        return (0..<CMCPGW_sk_X509_num(chain)).compactMap { index in
            guard let certificate = CMCPGW_sk_X509_value(chain, index),
                X509_NAME_cmp(X509_get_subject_name(certificate), name) == 0
            else { return nil }
            return certificate
        }
    }
}

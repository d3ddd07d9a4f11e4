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
enum SignedRevocationLists {
    /// Installs the look-up on `store`.
    static func install(on store: OpaquePointer) {
        X509_STORE_set_lookup_crls(store, lookUp)
    }

    /// The look-up OpenSSL calls with the chain built and the issuer's name of the certificate it checks.
    private static let lookUp: X509_STORE_CTX_lookup_crls_fn = { context, issuerName in
        guard let found = X509_STORE_CTX_get1_crls(context, issuerName) else { return nil }
        let issuers = certificates(named: issuerName, in: X509_STORE_CTX_get0_chain(context))
        // A failed verification leaves errors in the thread's queue, which the TLS handshake in progress would read
        // as its own.
        ERR_set_mark()
        defer { ERR_pop_to_mark() }
        var index = CMCPGW_sk_X509_CRL_num(found) - 1
        while index >= 0 {
            let crl = CMCPGW_sk_X509_CRL_value(found, index)
            if !issuers.contains(where: { X509_CRL_verify(crl, X509_get0_pubkey($0)) == 1 }) {
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

internal import COpenSSL

/// Which end of a TLS connection a context serves.
public enum TLSRole: Sendable {
    /// Accepts connections (the gateway's listener).
    case server
    /// Opens connections (the gateway towards upstreams; tests).
    case client
}

/// An OpenSSL `SSL_CTX` built from a `TLSConfiguration`: shared by every connection of one listener or client.
///
/// `@unchecked Sendable`: the context is fully configured in `init` and never changed afterwards, and OpenSSL
/// documents `SSL_CTX` as safe to share between threads for `SSL_new`. The trust-anchor table is immutable too.
public final class TLSContext: @unchecked Sendable {
    /// The end of the connection this context serves.
    public let role: TLSRole
    /// The configuration the context was built from.
    public let configuration: TLSConfiguration
    let pointer: OpaquePointer
    /// SHA-256 fingerprint of every trusted CA certificate → label of the bundle it came from.
    let trustAnchors: [String: String]
    /// ALPN protocols in wire format (length-prefixed), server preference order.
    let alpnWire: [UInt8]

    /// Builds and validates an OpenSSL context; every file is read now, so a bad path or key fails here, not per connection.
    public init(role: TLSRole, configuration: TLSConfiguration) throws(TLSError) {
        // Everything that can fail happens before `self` is whole: the `SSL_CTX` has exactly one owner at a time
        // (this initializer until it succeeds, then `deinit`), so a failure frees it once.
        let alpnWire = try Self.alpnWireFormat(configuration.alpnProtocols)
        OpenSSLErrorQueue.clear()
        guard let context = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw .invalidConfiguration("SSL_CTX_new failed", openSSL: OpenSSLErrorQueue.drain())
        }
        let anchors: [String: String]
        do {
            try Self.configureProtocol(context, configuration)
            try Self.configureIdentity(context, configuration, role: role)
            anchors = try Self.configureTrust(context, configuration, role: role)
            if role == .client && !alpnWire.isEmpty {
                // Unusually, SSL_CTX_set_alpn_protos returns 0 on success.
                try Self.check(SSL_CTX_set_alpn_protos(context, alpnWire, UInt32(alpnWire.count)) == 0, "cannot set ALPN protocols")
            }
        } catch {
            SSL_CTX_free(context)
            throw error
        }
        self.role = role
        self.configuration = configuration
        self.pointer = context
        self.alpnWire = alpnWire
        self.trustAnchors = anchors
        if role == .server && !configuration.resumesSessions {
            // No tickets (TLS 1.2 and 1.3) and no session cache: every handshake is a full one.
            SSL_CTX_set_options(pointer, CMCPGW_SSL_OP_NO_TICKET())
            _ = SSL_CTX_set_num_tickets(pointer, 0)
            _ = CMCPGW_SSL_CTX_set_session_cache_mode(pointer, CMCPGW_SSL_SESS_CACHE_OFF())
        } else if role == .server {
            // Tickets are protected by the process's rotating keys, shared across reloads.
            _ = SSL_CTX_set_tlsext_ticket_key_evp_cb(pointer, ticketKeyCallback)
            // A client's intermediate certificates go into its tickets: resumption verifies the leaf again.
            _ = SSL_CTX_set_session_ticket_cb(pointer, TicketChain.generate, nil, nil)
        }
        if role == .server && !alpnWire.isEmpty {
            // Cannot fail; the callback finds this context through its argument, which lives as long as the SSL_CTX.
            SSL_CTX_set_alpn_select_cb(pointer, selectALPN, Unmanaged.passUnretained(self).toOpaque())
        }
    }

    /// ALPN protocol names in wire format: each name 1–255 bytes, prefixed by its length.
    static func alpnWireFormat(_ protocols: [String]) throws(TLSError) -> [UInt8] {
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            guard (1...255).contains(bytes.count) else {
                throw .invalidConfiguration(
                    "ALPN protocol name '\(name.prefix(40))' must be 1 to 255 bytes long (it is \(bytes.count))", openSSL: [])
            }
            wire.append(UInt8(bytes.count))
            wire += bytes
        }
        return wire
    }

    /// The most CRLs one issuer may have among all the context's CRL files (a CA and its delta CRLs need a few).
    public static let maximumRevocationListsPerIssuer = 8

    deinit {
        SSL_CTX_free(pointer)
    }

    /// The label of the trusted bundle holding the certificate with this SHA-256 fingerprint, if any.
    public func trustAnchorLabel(forFingerprint fingerprint: String) -> String? {
        trustAnchors[fingerprint]
    }

    private static func configureProtocol(_ context: OpaquePointer, _ configuration: TLSConfiguration) throws(TLSError) {
        try check(
            CMCPGW_SSL_CTX_set_min_proto_version(context, configuration.minimumVersion.openSSLVersion) == 1,
            "cannot set the minimum TLS version")
        if let maximum = configuration.maximumVersion {
            try check(maximum >= configuration.minimumVersion, "maximum TLS version is below the minimum")
            try check(
                CMCPGW_SSL_CTX_set_max_proto_version(context, maximum.openSSLVersion) == 1,
                "cannot set the maximum TLS version")
        }
        let options = CMCPGW_SSL_OP_ALL() | CMCPGW_SSL_OP_NO_COMPRESSION() | CMCPGW_SSL_OP_NO_RENEGOTIATION()
        SSL_CTX_set_options(context, options)
        _ = CMCPGW_SSL_CTX_set_mode(context, CMCPGW_SSL_MODE_RELEASE_BUFFERS())
        try check(
            SSL_CTX_set_cipher_list(context, configuration.cipherList) == 1,
            "invalid TLS 1.2 cipher list '\(configuration.cipherList)'")
        try check(
            SSL_CTX_set_ciphersuites(context, configuration.cipherSuites) == 1,
            "invalid TLS 1.3 cipher suites '\(configuration.cipherSuites)'")
        try check(
            CMCPGW_SSL_CTX_set1_groups_list(context, configuration.groups) == 1,
            "invalid key-exchange groups '\(configuration.groups)'")
        SSL_CTX_set_verify_depth(context, Int32(configuration.verifyDepth))
    }

    private static func configureIdentity(
        _ context: OpaquePointer, _ configuration: TLSConfiguration, role: TLSRole
    ) throws(TLSError) {
        guard let chain = configuration.certificateChainFile else {
            if role == .server { throw .invalidConfiguration("a server needs a certificate chain file", openSSL: []) }
            return
        }
        guard let key = configuration.privateKeyFile else {
            throw .invalidConfiguration("certificate chain \(chain) has no private key file", openSSL: [])
        }
        try check(SSL_CTX_use_certificate_chain_file(context, chain) == 1, "cannot load certificate chain from \(chain)")
        try check(SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1, "cannot load private key from \(key)")
        try check(SSL_CTX_check_private_key(context) == 1, "private key \(key) does not match certificate \(chain)")
    }

    /// Loads the CA bundles and CRLs into the context's store; returns fingerprint → bundle label.
    private static func configureTrust(
        _ context: OpaquePointer, _ configuration: TLSConfiguration, role: TLSRole
    ) throws(TLSError) -> [String: String] {
        let verifies = role == .server ? configuration.clientAuthentication != .none : configuration.verifyServerCertificate
        if role == .client && verifies && configuration.trustedCABundles.isEmpty {
            throw .invalidConfiguration("a client that verifies the server needs at least one trusted CA bundle", openSSL: [])
        }
        if role == .server && verifies && configuration.trustedCABundles.isEmpty {
            throw .invalidConfiguration(
                "client authentication '\(configuration.clientAuthentication.rawValue)' needs at least one trusted CA bundle",
                openSSL: [])
        }
        guard let store = SSL_CTX_get_cert_store(context) else {
            throw .invalidConfiguration("SSL_CTX has no certificate store", openSSL: OpenSSLErrorQueue.drain())
        }
        var anchors: [String: String] = [:]
        // Every bundle's certificates stay loaded until the end, so that CAs of different bundles can be compared.
        var loaded: [(label: String, path: String, certificate: OpaquePointer)] = []
        defer { for entry in loaded { X509_free(entry.certificate) } }
        for bundle in configuration.trustedCABundles {
            for certificate in try PEMFile.certificates(bundle.path) {
                loaded.append((bundle.label, bundle.path, certificate))
            }
        }
        for (label, path, certificate) in loaded {
            let fingerprint = X509Reader.fingerprint(certificate)
            if let owner = anchors[fingerprint], owner != label {
                throw .invalidConfiguration(
                    "CA certificate \(fingerprint) in \(path) is already trusted for '\(owner)'; "
                        + "one CA cannot anchor both '\(owner)' and '\(label)'", openSSL: [])
            }
            anchors[fingerprint] = label
            OpenSSLErrorQueue.clear()
            if X509_STORE_add_cert(store, certificate) != 1 {
                // Adding the same certificate twice (same label) is harmless; anything else is not.
                let errors = OpenSSLErrorQueue.drain()
                if !errors.allSatisfy({ $0.reason.contains("cert already in hash table") }) {
                    throw .invalidConfiguration("cannot trust a certificate from \(path)", openSSL: errors)
                }
            }
            if role == .server && configuration.announcesClientCAs {
                try check(SSL_CTX_add_client_CA(context, certificate) == 1, "cannot announce CA from \(path)")
            }
        }
        try refuseCrossLabelIssuers(loaded)
        var verified: Set<SignedRevocationLists.Verified.Pair> = []
        var perIssuer: [String: Int] = [:]
        for path in configuration.crlFiles {
            let revocationLists = try PEMFile.revocationLists(path)
            defer { for crl in revocationLists { X509_CRL_free(crl) } }
            for crl in revocationLists {
                // Each CRL naming a chain's CA is checked against it in every full handshake through that CA
                // (`SignedRevocationLists`): a bound on them bounds that work, which a tenant listing many CRLs under
                // another tenant's CA name would otherwise multiply.
                let issuerName = X509Reader.distinguishedName(X509_CRL_get_issuer(crl))
                perIssuer[issuerName, default: 0] += 1
                guard perIssuer[issuerName]! <= Self.maximumRevocationListsPerIssuer else {
                    throw .invalidConfiguration(
                        "more than \(Self.maximumRevocationListsPerIssuer) CRLs name \(issuerName) as their issuer (the last in \(path))",
                        openSSL: [])
                }
                // A CRL naming a CA trusted here as its issuer must carry that CA's signature. OpenSSL takes the
                // newest CRL naming a certificate's issuer and checks its signature only then, so a CRL one tenant
                // lists under another tenant's CA name, signed with any key, would fail every handshake of that
                // tenant's agents ("CRL signature failure"). (The CRL of an intermediate CA, which clients send in
                // their chains and no bundle holds, is kept only when that CA signed it: `SignedRevocationLists`.)
                let issuer = X509_CRL_get_issuer(crl)
                let named = loaded.filter { X509_NAME_cmp(X509_get_subject_name($0.certificate), issuer) == 0 }
                let signers = named.filter { X509_CRL_verify(crl, X509_get0_pubkey($0.certificate)) == 1 }
                for signer in signers { verified.insert(SignedRevocationLists.Verified.pair(crl: crl, issuer: signer.certificate)) }
                let signed = !signers.isEmpty
                OpenSSLErrorQueue.clear()
                guard named.isEmpty || signed else {
                    throw .invalidConfiguration(
                        "the CRL in \(path) names a trusted CA as its issuer (\(X509Reader.distinguishedName(issuer))) but is not "
                            + "signed by it", openSSL: [])
                }
                try check(X509_STORE_add_crl(store, crl) == 1, "cannot add CRL from \(path)")
            }
        }
        if !configuration.crlFiles.isEmpty {
            // Every certificate of the chain, not only the leaf: an issuing CA revoked in its root's CRL takes every
            // certificate it issued with it (each issuer in the chain must then have a CRL: fail closed).
            X509_STORE_set_flags(store, UInt(X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL))
            SignedRevocationLists.install(on: store, verified: SignedRevocationLists.Verified(verified))
        }
        if verifies {
            var mode = SSL_VERIFY_PEER
            if role == .server && configuration.clientAuthentication == .required {
                mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT
            }
            SSL_CTX_set_verify(context, mode, nil)
        } else {
            SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
        }
        if role == .server {
            // Sessions resume only into a context that verifies clients the same way: the same client-certificate
            // mode and the same labelled CAs. A ticket from a listener that asks for no certificate (or trusts other
            // CAs) then starts a full handshake on one that requires a certificate, instead of skipping the request
            // for it (OpenSSL does not ask for a certificate on resumption).
            var sessionContext = Self.sessionContext(configuration.clientAuthentication, anchors: anchors)
            _ = SSL_CTX_set_session_id_context(context, &sessionContext, UInt32(sessionContext.count))
        }
        return anchors
    }

    /// A CA of one bundle issued by a CA of another would make a chain through both name two owners (two tenants):
    /// refused when the context is built.
    private static func refuseCrossLabelIssuers(_ loaded: [(label: String, path: String, certificate: OpaquePointer)]) throws(TLSError) {
        for issuer in loaded {
            for subject in loaded where subject.label != issuer.label {
                guard X509_check_issued(issuer.certificate, subject.certificate) == X509_V_OK else { continue }
                throw .invalidConfiguration(
                    "CA certificate \(X509Reader.fingerprint(subject.certificate)) in \(subject.path) ('\(subject.label)') is "
                        + "issued by a CA in \(issuer.path) ('\(issuer.label)'): a chain through both would name both; "
                        + "give each its own CAs", openSSL: [])
            }
        }
    }

    /// The session id context of a server context: SHA-256 over the client-certificate mode and the labelled CA
    /// fingerprints (32 bytes, OpenSSL's maximum).
    static func sessionContext(_ mode: TLSConfiguration.ClientAuthentication, anchors: [String: String]) -> [UInt8] {
        var text = "mcpgw session context 1\n\(mode.rawValue)\n"
        for (fingerprint, label) in anchors.sorted(by: { $0.key < $1.key }) { text += "\(label) \(fingerprint)\n" }
        let bytes = Array(text.utf8)
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = EVP_Digest(bytes, bytes.count, &digest, &length, EVP_sha256(), nil)
        return digest
    }

    static func check(_ succeeded: Bool, _ what: @autoclosure () -> String) throws(TLSError) {
        if !succeeded { throw .invalidConfiguration(what(), openSSL: OpenSSLErrorQueue.drain()) }
    }
}

/// Server-side ALPN selection: the first of our protocols (in our order) that the client offered.
/// A client that offers ALPN but none of ours gets a `no_application_protocol` alert.
private func selectALPN(
    _ ssl: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?, _ outLength: UnsafeMutablePointer<UInt8>?,
    _ offered: UnsafePointer<UInt8>?, _ offeredLength: UInt32, _ argument: UnsafeMutableRawPointer?
) -> Int32 {
    guard let argument, let offered, let out, let outLength else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    let context = Unmanaged<TLSContext>.fromOpaque(argument).takeUnretainedValue()
    let client = UnsafeBufferPointer(start: offered, count: Int(offeredLength))
    var ours = context.alpnWire[...]
    while let length = ours.first.map(Int.init), ours.count > length {
        let candidate = ours.dropFirst().prefix(length)
        var index = 0
        while index < client.count {
            let theirLength = Int(client[index])
            let start = index + 1
            guard start + theirLength <= client.count else { break }
            if theirLength == length && client[start..<start + theirLength].elementsEqual(candidate) {
                out.pointee = offered + start
                outLength.pointee = UInt8(theirLength)
                return SSL_TLSEXT_ERR_OK
            }
            index = start + theirLength
        }
        ours = ours.dropFirst(length + 1)
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL
}

/// Everything needed to build a `TLSContext`, for either end of a connection.
///
/// The defaults follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3, AEAD ciphers with forward secrecy only,
/// X25519/P-256/P-384 key exchange, no renegotiation, no compression.
public struct TLSConfiguration: Sendable {
    /// Whether (and how strictly) a server asks its clients for a certificate.
    public enum ClientAuthentication: String, Sendable, CaseIterable {
        /// No certificate is requested.
        case none
        /// A certificate is requested; one that is sent must verify, but a client may send none.
        case optional
        /// A verified client certificate is mandatory; the handshake fails without one.
        case required
    }

    /// A TLS protocol version.
    public enum ProtocolVersion: String, Sendable, Comparable, CaseIterable {
        /// OpenSSL's number for this version (`TLS1_2_VERSION`, `TLS1_3_VERSION`).
        var openSSLVersion: Int32 { self == .tls1_2 ? 0x0303 : 0x0304 }

        /// TLS 1.2 (RFC 5246).
        case tls1_2 = "TLSv1.2"
        /// TLS 1.3 (RFC 8446).
        case tls1_3 = "TLSv1.3"

        public static func < (lhs: Self, rhs: Self) -> Bool { lhs == .tls1_2 && rhs == .tls1_3 }
    }

    /// A PEM file of CA certificates trusted to sign peer certificates, with the label that names its owner
    /// (for mcpgw, the tenant). The label travels with every certificate this bundle verified.
    public struct TrustedCABundle: Sendable, Hashable {
        /// Who this bundle belongs to, e.g. a tenant id.
        public var label: String
        /// Path of the PEM file; it may hold several certificates.
        public var path: String

        /// A bundle read from `path` and labelled `label`.
        public init(label: String, path: String) {
            self.label = label
            self.path = path
        }
    }

    /// Mozilla "intermediate" TLS 1.2 cipher list, without the finite-field DHE suites (no DH parameters are shipped).
    public static let intermediateCipherList =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    /// The TLS 1.3 cipher suites, all of them AEAD.
    public static let tls13CipherSuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
    /// Key-exchange groups in preference order.
    public static let defaultGroups = "X25519:prime256v1:secp384r1"

    /// PEM file with our certificate first, followed by any intermediates. Required for a server.
    public var certificateChainFile: String?
    /// PEM file with the private key of `certificateChainFile`.
    public var privateKeyFile: String?
    /// CA bundles that may sign the peer's certificate (client certificates for a server, server certificates for a client).
    public var trustedCABundles: [TrustedCABundle]
    /// For a server: whether to request client certificates.
    public var clientAuthentication: ClientAuthentication
    /// For a server that requests client certificates: whether the request names the trusted CAs (OpenSSL's client CA
    /// list). Some clients pick their certificate by that list; leaving it out keeps the CAs' names (and so, on a
    /// shared gateway, which tenants it serves) from anyone who merely connects.
    public var announcesClientCAs: Bool
    /// For a server: whether sessions resume (tickets and the session cache). A listener that never reads the
    /// re-verification of a resumed client certificate (the admin listener) turns it off, so that every connection's
    /// certificate is checked in full against the trust store (and CRLs) in force.
    public var resumesSessions: Bool
    /// Lowest protocol version accepted; never lower than TLS 1.2.
    public var minimumVersion: ProtocolVersion
    /// Highest protocol version offered or accepted; nil means the newest this OpenSSL supports.
    public var maximumVersion: ProtocolVersion?
    /// TLS 1.2 cipher list in OpenSSL syntax.
    public var cipherList: String
    /// TLS 1.3 cipher suites in OpenSSL syntax.
    public var cipherSuites: String
    /// Key-exchange groups in OpenSSL syntax.
    public var groups: String
    /// ALPN protocols in preference order; a server refuses clients that offer ALPN without any of these.
    public var alpnProtocols: [String]
    /// PEM CRL files. When any is given, every client certificate's issuer must have a CRL here (fail closed).
    public var crlFiles: [String]
    /// Maximum number of intermediate certificates between a peer certificate and a trusted CA.
    public var verifyDepth: Int
    /// For a client: check the server certificate against `trustedCABundles` and its name against the host.
    public var verifyServerCertificate: Bool
    /// How long a handshake may take before the connection is dropped (slow or silent peers).
    public var handshakeTimeout: Duration

    /// A configuration with the secure defaults and no certificates.
    public init(
        certificateChainFile: String? = nil,
        privateKeyFile: String? = nil,
        trustedCABundles: [TrustedCABundle] = [],
        clientAuthentication: ClientAuthentication = .none,
        announcesClientCAs: Bool = true,
        resumesSessions: Bool = true,
        minimumVersion: ProtocolVersion = .tls1_2,
        maximumVersion: ProtocolVersion? = nil,
        cipherList: String = TLSConfiguration.intermediateCipherList,
        cipherSuites: String = TLSConfiguration.tls13CipherSuites,
        groups: String = TLSConfiguration.defaultGroups,
        alpnProtocols: [String] = ["http/1.1"],
        crlFiles: [String] = [],
        verifyDepth: Int = 4,
        verifyServerCertificate: Bool = true,
        handshakeTimeout: Duration = .seconds(10)
    ) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.trustedCABundles = trustedCABundles
        self.clientAuthentication = clientAuthentication
        self.announcesClientCAs = announcesClientCAs
        self.resumesSessions = resumesSessions
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.cipherList = cipherList
        self.cipherSuites = cipherSuites
        self.groups = groups
        self.alpnProtocols = alpnProtocols
        self.crlFiles = crlFiles
        self.verifyDepth = verifyDepth
        self.verifyServerCertificate = verifyServerCertificate
        self.handshakeTimeout = handshakeTimeout
    }
}

public import struct Foundation.Date

/// The facts about one X.509 certificate that the layers above TLS need: names, validity, serial, fingerprint.
public struct CertificateInfo: Sendable, Hashable {
    /// Subject distinguished name in RFC 2253 form, e.g. `CN=bot1,O=mcpgw development`.
    public let subject: String
    /// Issuer distinguished name in RFC 2253 form.
    public let issuer: String
    /// Serial number as upper-case hexadecimal.
    public let serialNumber: String
    /// Start of the validity period.
    public let notBefore: Date
    /// End of the validity period.
    public let notAfter: Date
    /// Subject alternative names of type URI (SPIFFE ids live here).
    public let uris: [String]
    /// Subject alternative names of type DNS.
    public let dnsNames: [String]
    /// Subject alternative names of type e-mail (rfc822Name).
    public let emailAddresses: [String]
    /// Subject alternative names of type IP address, in textual form.
    public let ipAddresses: [String]
    /// SHA-256 of the DER encoding, lower-case hexadecimal without separators.
    public let sha256Fingerprint: String
    /// The DER encoding.
    public let der: [UInt8]
    /// Whether the certificate may issue others: `basicConstraints` CA:TRUE, or a `keyUsage` with keyCertSign (an agent's
    /// certificate must have neither, as the SPIFFE X.509-SVID specification says of leaves).
    public let canIssueCertificates: Bool
}

/// A peer certificate that OpenSSL verified during the handshake, with the chain that verified it.
public struct PeerCertificate: Sendable, Hashable {
    /// The peer's own certificate.
    public let leaf: CertificateInfo
    /// The verified chain, leaf first and the trust anchor last.
    public let verifiedChain: [CertificateInfo]
    /// Label of the configured CA bundle that holds the chain's trust anchor (for mcpgw: the tenant).
    public let trustAnchorLabel: String?
}

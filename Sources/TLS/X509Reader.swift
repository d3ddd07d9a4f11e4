internal import COpenSSL
import Foundation

/// Reads `CertificateInfo` out of OpenSSL `X509` objects.
enum X509Reader {
    /// The facts of `certificate` (an `X509*`); the pointer is borrowed, not freed.
    static func info(_ certificate: OpaquePointer) -> CertificateInfo {
        var names = (uris: [String](), dns: [String](), emails: [String](), ips: [String]())
        if let raw = X509_get_ext_d2i(certificate, NID_subject_alt_name, nil, nil) {
            let stack = OpaquePointer(raw)
            defer { CMCPGW_GENERAL_NAMES_free(stack) }
            for index in 0..<CMCPGW_sk_GENERAL_NAME_num(stack) {
                guard let name = CMCPGW_sk_GENERAL_NAME_value(stack, index),
                    let value = CMCPGW_GENERAL_NAME_string(name)
                else { continue }
                let bytes = Array(UnsafeBufferPointer(start: ASN1_STRING_get0_data(value), count: Int(ASN1_STRING_length(value))))
                switch CMCPGW_GENERAL_NAME_type(name) {
                case GEN_URI: names.uris.append(String(decoding: bytes, as: UTF8.self))
                case GEN_DNS: names.dns.append(String(decoding: bytes, as: UTF8.self))
                case GEN_EMAIL: names.emails.append(String(decoding: bytes, as: UTF8.self))
                case GEN_IPADD: names.ips.append(ipText(bytes))
                default: break
                }
            }
        }
        return CertificateInfo(
            subject: distinguishedName(X509_get_subject_name(certificate)),
            issuer: distinguishedName(X509_get_issuer_name(certificate)),
            serialNumber: serial(certificate),
            notBefore: date(X509_get0_notBefore(certificate)),
            notAfter: date(X509_get0_notAfter(certificate)),
            uris: names.uris,
            dnsNames: names.dns,
            emailAddresses: names.emails,
            ipAddresses: names.ips,
            sha256Fingerprint: fingerprint(certificate),
            der: der(certificate),
            canIssueCertificates: X509_check_ca(certificate) != 0
                || X509_get_extension_flags(certificate) & UInt32(EXFLAG_CA) != 0
                || (X509_get_extension_flags(certificate) & UInt32(EXFLAG_KUSAGE) != 0
                    && X509_get_key_usage(certificate) & UInt32(KU_KEY_CERT_SIGN) != 0)
        )
    }

    /// Lower-case hexadecimal SHA-256 of the certificate's DER encoding.
    static func fingerprint(_ certificate: OpaquePointer) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(certificate, EVP_sha256(), &digest, &length) == 1 else { return "" }
        return HexText.lowercase(digest.prefix(Int(length)))
    }

    private static func der(_ certificate: OpaquePointer) -> [UInt8] {
        let length = i2d_X509(certificate, nil)
        guard length > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        bytes.withUnsafeMutableBufferPointer { buffer in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            _ = i2d_X509(certificate, &cursor)
        }
        return bytes
    }

    /// `name` in RFC 2253 form ("" when it cannot be printed).
    static func distinguishedName(_ name: OpaquePointer?) -> String {
        guard let name, let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        guard X509_NAME_print_ex(bio, name, 0, CMCPGW_XN_FLAG_RFC2253()) >= 0 else { return "" }
        return MemoryBIO.string(bio)
    }

    private static func serial(_ certificate: OpaquePointer) -> String {
        guard let bignum = ASN1_INTEGER_to_BN(X509_get_serialNumber(certificate), nil) else { return "" }
        defer { BN_free(bignum) }
        guard let text = BN_bn2hex(bignum) else { return "" }
        defer { CMCPGW_OPENSSL_free(text) }
        return String(cString: text)
    }

    private static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date {
        var parts = tm()
        guard let time, ASN1_TIME_to_tm(time, &parts) == 1 else { return Date(timeIntervalSince1970: 0) }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    private static func ipText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        guard bytes.count == 16 else { return HexText.lowercase(bytes) }
        var groups: [String] = []
        for index in stride(from: 0, to: 16, by: 2) {
            groups.append(String(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]), radix: 16))
        }
        return groups.joined(separator: ":")
    }
}

/// Helpers for OpenSSL memory BIOs.
enum MemoryBIO {
    /// Everything buffered in a memory BIO, as UTF-8 text; the BIO is drained.
    static func string(_ bio: OpaquePointer) -> String {
        String(decoding: bytes(bio), as: UTF8.self)
    }

    /// Everything buffered in a memory BIO; the BIO is drained.
    static func bytes(_ bio: OpaquePointer) -> [UInt8] {
        let pending = Int(BIO_ctrl_pending(bio))
        guard pending > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: pending)
        let read = BIO_read(bio, &bytes, Int32(pending))
        return Array(bytes.prefix(max(0, Int(read))))
    }
}

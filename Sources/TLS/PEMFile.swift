internal import COpenSSL

/// Reads PEM files with OpenSSL, reporting unreadable or empty files as configuration errors.
enum PEMFile {
    /// Every certificate in the file (`X509*`, owned by the caller).
    static func certificates(_ path: String) throws(TLSError) -> [OpaquePointer] {
        try objects(path, kind: "certificate") { bio in PEM_read_bio_X509(bio, nil, nil, nil) }
    }

    /// Every CRL in the file (`X509_CRL*`, owned by the caller).
    static func revocationLists(_ path: String) throws(TLSError) -> [OpaquePointer] {
        try objects(path, kind: "CRL") { bio in PEM_read_bio_X509_CRL(bio, nil, nil, nil) }
    }

    private static func objects(
        _ path: String, kind: String, read: (OpaquePointer) -> OpaquePointer?
    ) throws(TLSError) -> [OpaquePointer] {
        OpenSSLErrorQueue.clear()
        guard let bio = BIO_new_file(path, "r") else {
            throw .invalidConfiguration("cannot open \(path)", openSSL: OpenSSLErrorQueue.drain())
        }
        defer { BIO_free(bio) }
        var objects: [OpaquePointer] = []
        while let object = read(bio) { objects.append(object) }
        // Reading stops with a "no start line" error at the end of the file; that one is expected.
        _ = OpenSSLErrorQueue.drain()
        if objects.isEmpty { throw .invalidConfiguration("no PEM \(kind) found in \(path)", openSSL: []) }
        return objects
    }
}

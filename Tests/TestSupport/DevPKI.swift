import Foundation

/// Paths into the repository's development PKI (`certs-dev/`), for tests.
public enum DevPKI {
    /// The repository's root folder.
    public static let repositoryRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }()

    /// An absolute path under `certs-dev/`.
    public static func path(_ relative: String) -> String { repositoryRoot + "/certs-dev/" + relative }

    /// The gateway's server certificate chain.
    public static var serverChain: String { path("server.pem") }
    /// The gateway's server key.
    public static var serverKey: String { path("server.key") }
    /// The CA that signed the gateway's certificate (what clients trust).
    public static var gatewayCA: String { path("gateway-ca.pem") }
    /// A tenant's root CA.
    public static func tenantCA(_ tenant: String) -> String { path("\(tenant)/ca.pem") }
    /// A tenant's CRL.
    public static func tenantCRL(_ tenant: String) -> String { path("\(tenant)/ca.crl.pem") }
    /// An agent certificate and key (`acme/agents/bot1` → `.pem`, `.key`).
    public static func agent(_ tenant: String, _ name: String) -> (certificate: String, key: String) {
        (path("\(tenant)/agents/\(name).pem"), path("\(tenant)/agents/\(name).key"))
    }
}

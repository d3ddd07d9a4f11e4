import Foundation
import Gateway
import Identity
import StrictJSON
import TLS

/// The gateway configuration file (JSON): listener, TLS, identity defaults and tenants. Unknown keys are errors,
/// relative paths are relative to the file's folder, and every referenced file is read at start-up.
struct ConfigurationFile {
    /// The listener settings.
    var gateway: GatewayConfiguration
    /// Tenants' identity settings.
    var identity: IdentityConfiguration

    static let topLevelKeys: Set<String> = ["listen", "tls", "identity", "tenants"]
    static let tlsKeys: Set<String> = ["certificate_chain", "private_key", "client_auth", "min_version", "verify_depth", "insecure_plain_http"]

    /// Loads and validates `path`.
    static func load(_ path: String) throws -> ConfigurationFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read configuration file \(path)")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            return try parse(Array(data), baseDirectory: base)
        } catch let error as JSONParseError {
            throw ConfigurationError("\(path): not valid JSON: \(error)")
        } catch let error as JSONFieldError {
            throw ConfigurationError("\(path): \(error)")
        }
    }

    /// Parses a configuration document.
    static func parse(_ bytes: [UInt8], baseDirectory: String) throws -> ConfigurationFile {
        let root = try JSONObjectReader(try JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 32)))
        try root.requireOnlyKeys(topLevelKeys)
        guard let tenantsReader = try root.object("tenants") else {
            throw JSONFieldError(path: "tenants", reason: "is required (one object per tenant)")
        }
        let identity = try IdentityConfiguration.read(
            identity: try root.object("identity"), tenants: tenantsReader, baseDirectory: baseDirectory)

        var listen = ListenAddress(host: "127.0.0.1", port: 8443)
        if let text = try root.string("listen") {
            guard let parsed = ListenAddress(parsing: text) else {
                throw JSONFieldError(path: "listen", reason: "'\(text)' is not HOST:PORT")
            }
            listen = parsed
        }
        guard let tlsReader = try root.object("tls") else { throw JSONFieldError(path: "tls", reason: "is required") }
        try tlsReader.requireOnlyKeys(tlsKeys)
        let insecure = try tlsReader.bool("insecure_plain_http") ?? false
        var tls: TLSConfiguration?
        if !insecure {
            let resolve = { (path: String) in path.hasPrefix("/") ? path : baseDirectory + "/" + path }
            var configuration = TLSConfiguration(
                certificateChainFile: resolve(try tlsReader.requiredString("certificate_chain")),
                privateKeyFile: resolve(try tlsReader.requiredString("private_key")))
            if let mode = try tlsReader.string("client_auth") {
                guard let parsed = TLSConfiguration.ClientAuthentication(rawValue: mode) else {
                    throw JSONFieldError(path: "tls.client_auth", reason: "must be none, optional or required")
                }
                configuration.clientAuthentication = parsed
            } else {
                configuration.clientAuthentication = .optional
            }
            if let version = try tlsReader.string("min_version") {
                guard let parsed = TLSConfiguration.ProtocolVersion(rawValue: version) else {
                    throw JSONFieldError(path: "tls.min_version", reason: "must be TLSv1.2 or TLSv1.3")
                }
                configuration.minimumVersion = parsed
            }
            configuration.verifyDepth = try tlsReader.int("verify_depth") ?? configuration.verifyDepth
            // Client certificates are trusted per tenant: each tenant's bundles are labelled with its id.
            for (tenant, settings) in identity.tenants.sorted(by: { $0.key < $1.key }) {
                configuration.trustedCABundles += settings.clientCABundles.map { .init(label: tenant, path: $0) }
                configuration.crlFiles += settings.crlFiles
            }
            if configuration.trustedCABundles.isEmpty { configuration.clientAuthentication = .none }
            tls = configuration
        }
        return ConfigurationFile(
            gateway: GatewayConfiguration(listen: listen, tls: tls, allowInsecurePlainHTTP: insecure), identity: identity)
    }
}

/// A configuration problem, said in words that name the file and the setting.
struct ConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

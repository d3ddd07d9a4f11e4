import Foundation
import TestSupport
import Testing

@testable import TLS

/// Configurations that once crashed or leaked: each must now fail cleanly with a clear error. Run under
/// AddressSanitizer by `scripts/asan.sh`, which also catches a double free or a leak on these paths.
@Suite("TLS context configuration failures are clean")
struct TLSContextSafetyTests {
    func message(_ error: TLSError) -> String {
        if case .invalidConfiguration(let message, _) = error { return message }
        return "\(error)"
    }

    @Test(
        "an empty ALPN protocol name is refused (it once freed the SSL_CTX twice on the client side)", arguments: [TLSRole.client, .server])
    func emptyALPN(role: TLSRole) throws {
        var configuration = TLSConfiguration(trustedCABundles: [.init(label: "gateway", path: DevPKI.gatewayCA)], alpnProtocols: [""])
        if role == .server {
            configuration.certificateChainFile = DevPKI.serverChain
            configuration.privateKeyFile = DevPKI.serverKey
        }
        let error = #expect(throws: TLSError.self) { try TLSContext(role: role, configuration: configuration) }
        #expect(error.map(message)?.contains("ALPN protocol name") == true)
    }

    @Test("an ALPN protocol name over 255 bytes is refused (it once trapped)")
    func longALPN() throws {
        let configuration = TLSConfiguration(
            trustedCABundles: [.init(label: "gateway", path: DevPKI.gatewayCA)], alpnProtocols: [String(repeating: "h", count: 256)])
        let error = #expect(throws: TLSError.self) { try TLSContext(role: .client, configuration: configuration) }
        #expect(error.map(message)?.contains("1 to 255 bytes") == true)
        #expect(try TLSContext.alpnWireFormat([String(repeating: "h", count: 255)]).count == 256)
    }

    @Test("a trust configuration that fails half-way through a bundle fails cleanly (no certificate of it leaks)")
    func partialTrust() throws {
        // The same CA under two tenants: refused at the first certificate of a two-certificate bundle, so the second
        // one has been read but not yet used when the configuration fails (it once leaked).
        let bundle = FileManager.default.temporaryDirectory.appendingPathComponent("mcpgw-bundle-\(UUID()).pem").path
        defer { try? FileManager.default.removeItem(atPath: bundle) }
        let both =
            try String(contentsOfFile: DevPKI.tenantCA("acme"), encoding: .utf8)
            + String(contentsOfFile: DevPKI.tenantCA("globex"), encoding: .utf8)
        try both.write(toFile: bundle, atomically: true, encoding: .utf8)
        let configuration = TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [.init(label: "acme", path: DevPKI.tenantCA("acme")), .init(label: "globex", path: bundle)],
            clientAuthentication: .optional)
        let error = #expect(throws: TLSError.self) { try TLSContext(role: .server, configuration: configuration) }
        #expect(error.map(message)?.contains("already trusted for 'acme'") == true)
    }

    @Test("a CRL is taken only from a trusted CA named as its issuer: one tenant cannot revoke another tenant's agents")
    func crlFromAnotherTenantsKey() throws {
        var configuration = TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [
                .init(label: "acme", path: DevPKI.tenantCA("acme")), .init(label: "globex", path: DevPKI.tenantCA("globex")),
            ],
            clientAuthentication: .optional, crlFiles: [DevPKI.tenantCRL("acme"), DevPKI.tenantCRL("globex")])
        _ = try TLSContext(role: .server, configuration: configuration)
        // Listed by globex: it names acme's CA as its issuer, but globex's key signed it. Loaded, it would fail the
        // handshake of every acme agent ("CRL signature failure").
        configuration.crlFiles.append(DevPKI.path("untrusted/forged-acme.crl.pem"))
        let error = #expect(throws: TLSError.self) { try TLSContext(role: .server, configuration: configuration) }
        #expect(error.map(message)?.contains("names a trusted CA as its issuer") == true, "\(String(describing: error))")
        // The CRL of a CA no bundle holds (an intermediate, sent by clients in their chains) is checked when used.
        configuration.crlFiles = [DevPKI.tenantCRL("acme")]
        configuration.trustedCABundles = [.init(label: "globex", path: DevPKI.tenantCA("globex"))]
        _ = try TLSContext(role: .server, configuration: configuration)
    }

    @Test("at most 8 CRLs may name one issuer: each is checked in every full handshake through that CA")
    func crlsPerIssuerBounded() throws {
        var configuration = TLSConfiguration(
            certificateChainFile: DevPKI.serverChain, privateKeyFile: DevPKI.serverKey,
            trustedCABundles: [.init(label: "globex", path: DevPKI.tenantCA("globex"))],
            clientAuthentication: .optional,
            crlFiles: Array(repeating: DevPKI.tenantCRL("acme"), count: TLSContext.maximumRevocationListsPerIssuer))
        _ = try TLSContext(role: .server, configuration: configuration)
        // Found in review: a tenant listing many CRLs under another tenant's (intermediate) CA name made every full
        // handshake of that tenant's agents check each one.
        configuration.crlFiles.append(DevPKI.tenantCRL("acme"))
        let error = #expect(throws: TLSError.self) { try TLSContext(role: .server, configuration: configuration) }
        #expect(error.map(message)?.contains("more than 8 CRLs name") == true, "\(String(describing: error))")
    }
}

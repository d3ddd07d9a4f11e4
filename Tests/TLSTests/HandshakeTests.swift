import NIOCore
import TLS
import TestSupport
import Testing

@Suite("In-memory TLS handshakes")
struct HandshakeTests {
    @Test("TLS 1.3 with a valid acme agent certificate: SAN URI, chain and tenant reach the handler above")
    func tls13WithClientCertificate() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client())
        try pair.connect()
        let server = try #require(pair.serverRecorder.handshake)
        #expect(server.protocolVersion == "TLSv1.3")
        #expect(server.alpnProtocol == "http/1.1")
        let peer = try #require(server.peerCertificate)
        #expect(peer.leaf.uris == ["spiffe://mcpgw.dev/tenant/acme/agent/bot1"])
        #expect(peer.leaf.subject.contains("CN=bot1"))
        #expect(peer.verifiedChain.count == 2)
        #expect(peer.verifiedChain.last?.subject.contains("acme tenant CA") == true)
        #expect(peer.trustAnchorLabel == "acme")
        #expect(peer.leaf.sha256Fingerprint.count == 64)
        #expect(peer.leaf.notAfter > peer.leaf.notBefore)
        let client = try #require(pair.clientRecorder.handshake)
        #expect(client.peerCertificate?.leaf.dnsNames == ["localhost"])
        #expect(client.peerCertificate?.leaf.ipAddresses == ["127.0.0.1", "0:0:0:0:0:0:0:1"])
    }

    @Test("TLS 1.2 negotiates with a forward-secret AEAD cipher when the client tops out at 1.2")
    func tls12() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client(maximumVersion: .tls1_2))
        try pair.connect()
        let server = try #require(pair.serverRecorder.handshake)
        #expect(server.protocolVersion == "TLSv1.2")
        #expect(server.cipherSuite.hasPrefix("ECDHE-"))
        #expect(server.cipherSuite.contains("GCM") || server.cipherSuite.contains("CHACHA20"))
        #expect(server.peerCertificate?.trustAnchorLabel == "acme")
    }

    @Test("a globex agent is anchored to globex")
    func globexAnchor() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client(tenant: "globex"))
        try pair.connect()
        #expect(pair.serverRecorder.handshake?.peerCertificate?.trustAnchorLabel == "globex")
    }

    @Test(
        "client authentication required: bad or missing certificates are refused with a clear log line",
        arguments: [
            (nil as String?, "peer did not return a certificate"),
            ("untrusted/agents/rogue", "unable to get local issuer certificate"),
            ("acme/agents/expired", "certificate has expired"),
            ("acme/agents/revoked", "certificate revoked"),
        ])
    func refusedClientCertificates(certificate: String?, reason: String) throws {
        var client = DevTLS.client(tenant: nil)
        if let certificate {
            client.certificateChainFile = DevPKI.path(certificate + ".pem")
            client.privateKeyFile = DevPKI.path(certificate + ".key")
        }
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: client)
        try pair.connect()
        #expect(pair.serverRecorder.handshake == nil)
        let error = try #require(pair.serverRecorder.errors.first as? TLSError)
        #expect("\(error)".contains(reason))
        #expect(pair.serverLog.all.contains { $0.hasPrefix("info TLS handshake refused") && $0.contains(reason) })
        #expect(!pair.server.isActive)
        // The client learns about it from the alert, not from a silent hang.
        #expect(pair.clientRecorder.handshake == nil || !pair.client.isActive)
    }

    @Test("optional client authentication accepts a client without a certificate")
    func optionalWithoutCertificate() throws {
        let pair = try InMemoryTLSPair(
            server: DevTLS.server(clientAuthentication: .optional), client: DevTLS.client(tenant: nil))
        try pair.connect()
        let server = try #require(pair.serverRecorder.handshake)
        #expect(server.peerCertificate == nil)
    }

    @Test("optional client authentication still refuses a certificate that does not verify")
    func optionalWithBadCertificate() throws {
        var client = DevTLS.client(tenant: nil)
        client.certificateChainFile = DevPKI.path("acme/agents/expired.pem")
        client.privateKeyFile = DevPKI.path("acme/agents/expired.key")
        let pair = try InMemoryTLSPair(server: DevTLS.server(clientAuthentication: .optional), client: client)
        try pair.connect()
        #expect(pair.serverRecorder.handshake == nil)
        #expect(pair.serverLog.all.contains { $0.contains("certificate has expired") })
    }

    @Test("a client refuses a server whose certificate does not name the host it asked for")
    func serverNameMismatch() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client(), serverHostname: "example.org")
        try pair.connect()
        #expect(pair.clientRecorder.handshake == nil)
        let error = try #require(pair.clientRecorder.errors.first as? TLSError)
        #expect("\(error)".contains("server certificate refused"))
    }

    @Test("a client that verifies by IP address accepts the gateway's 127.0.0.1 SAN")
    func serverIPAddress() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client(), serverHostname: "127.0.0.1")
        try pair.connect()
        #expect(pair.clientRecorder.handshake != nil)
    }

    @Test("a client offering only an unknown ALPN protocol is refused")
    func alpnMismatch() throws {
        var client = DevTLS.client()
        client.alpnProtocols = ["h2"]
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: client)
        try pair.connect()
        #expect(pair.serverRecorder.handshake == nil)
        #expect(pair.serverLog.all.contains { $0.contains("no application protocol") })
    }
}

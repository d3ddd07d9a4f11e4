import NIOCore
import TLS
import TestSupport
import Testing

@Suite("In-memory TLS application data")
struct DataTransferTests {
    /// Deterministic pseudo-random bytes (xorshift), so a corrupted or reordered chunk cannot go unnoticed.
    static func payload(_ count: Int, seed: UInt64) -> ByteBuffer {
        var state = seed
        var buffer = ByteBuffer()
        buffer.reserveCapacity(count)
        for _ in 0..<count / 8 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            buffer.writeInteger(state)
        }
        return buffer
    }

    @Test("8 MiB pass intact in both directions, written as one buffer and as many small ones")
    func largeBodies() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client())
        try pair.connect()
        let upload = Self.payload(8 * 1024 * 1024, seed: 1)
        let download = Self.payload(8 * 1024 * 1024 + 8, seed: 2)
        let uploaded = pair.client.writeAndFlush(upload)
        var rest = download
        while rest.readableBytes > 0 {
            pair.server.write(rest.readSlice(length: min(rest.readableBytes, 1000))!, promise: nil)
        }
        pair.server.flush()
        try pair.pump()
        try uploaded.wait()
        #expect(pair.serverRecorder.received == upload)
        #expect(pair.clientRecorder.received == download)
    }

    @Test("data written before the handshake completes is held back, then delivered")
    func writeBeforeHandshake() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client())
        try pair.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try pair.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        let written = pair.client.writeAndFlush(ByteBuffer(string: "early"))
        try pair.pump()
        try written.wait()
        #expect(pair.serverRecorder.received == ByteBuffer(string: "early"))
    }

    @Test("close sends close_notify; the peer closes in turn")
    func closeNotify() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client())
        try pair.connect()
        let closed = pair.client.close()
        try pair.pump()
        try closed.wait()
        #expect(!pair.client.isActive)
        #expect(!pair.server.isActive)
        #expect(pair.serverRecorder.errors.isEmpty)
    }

    @Test("with half-closure allowed, close_notify becomes inputClosed and the server can still write")
    func halfClosure() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client())
        try pair.server.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).wait()
        try pair.connect()
        pair.client.close(mode: .output, promise: nil)
        try pair.pump()
        #expect(pair.serverRecorder.inputClosed)
        #expect(pair.server.isActive)
        // EmbeddedChannel closes fully on any close, so the client cannot read the reply here; the server must still
        // accept the write and put ciphertext on the wire.
        try pair.server.writeAndFlush(ByteBuffer(string: "reply after half-close")).wait()
        let ciphertext = try #require(try pair.server.readOutbound(as: ByteBuffer.self))
        #expect(ciphertext.readableBytes > "reply after half-close".utf8.count)
    }

    @Test("garbage instead of a ClientHello fails the handshake and closes the connection")
    func garbage() throws {
        let pair = try InMemoryTLSPair(server: DevTLS.server(), client: DevTLS.client())
        try pair.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try pair.server.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(pair.serverRecorder.errors.count == 1)
        #expect(!pair.server.isActive)
        #expect(pair.serverLog.all.contains { $0.contains("TLS handshake refused") })
    }
}

@Suite("TLS configuration errors")
struct ConfigurationErrorTests {
    @Test("a missing certificate file names the file")
    func missingFile() {
        var configuration = DevTLS.server()
        configuration.certificateChainFile = "/nonexistent/server.pem"
        #expect { try TLSContext(role: .server, configuration: configuration) } throws: { error in
            "\(error)".contains("/nonexistent/server.pem")
        }
    }

    @Test("a key that does not match the certificate is refused")
    func keyMismatch() {
        var configuration = DevTLS.server()
        configuration.privateKeyFile = DevPKI.agent("acme", "bot1").key
        #expect { try TLSContext(role: .server, configuration: configuration) } throws: { error in
            "\(error)".contains("mismatch")
        }
    }

    @Test("one CA cannot anchor two tenants")
    func sharedAnchor() {
        var configuration = DevTLS.server()
        configuration.trustedCABundles.append(.init(label: "globex", path: DevPKI.tenantCA("acme")))
        #expect { try TLSContext(role: .server, configuration: configuration) } throws: { error in
            "\(error)".contains("cannot anchor both")
        }
    }

    @Test("client authentication without any trusted CA is refused")
    func noTrust() {
        var configuration = DevTLS.server()
        configuration.trustedCABundles = []
        #expect(throws: TLSError.self) { try TLSContext(role: .server, configuration: configuration) }
    }

    @Test("an invalid cipher list is refused")
    func badCiphers() {
        var configuration = DevTLS.server()
        configuration.cipherList = "NOT-A-CIPHER"
        #expect { try TLSContext(role: .server, configuration: configuration) } throws: { error in
            "\(error)".contains("NOT-A-CIPHER")
        }
    }

    @Test("a file without PEM certificates is refused")
    func notPEM() {
        var configuration = DevTLS.server()
        configuration.trustedCABundles = [.init(label: "acme", path: DevPKI.path("generate.sh"))]
        #expect { try TLSContext(role: .server, configuration: configuration) } throws: { error in
            "\(error)".contains("no PEM certificate")
        }
    }
}

@Suite("TLS handshake time limit")
struct HandshakeTimeoutTests {
    @Test("a peer that never finishes the handshake is dropped at the limit, with a log line")
    func silentPeer() throws {
        var server = DevTLS.server()
        server.handshakeTimeout = .milliseconds(200)
        let pair = try InMemoryTLSPair(server: server, client: DevTLS.client())
        try pair.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        pair.server.embeddedEventLoop.advanceTime(by: .milliseconds(150))
        #expect(pair.server.isActive)
        pair.server.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        #expect(!pair.server.isActive)
        #expect(pair.serverLog.all.contains { $0.contains("did not complete within") })
    }
}

import Foundation
import Gateway
import Identity
import Logging
import NIOCore
import NIOEmbedded
import Policy
import StrictJSON
import TLS

/// The fuzz targets: each takes one input and runs one of the gateway's parsers of hostile bytes on it. Run from the
/// repository root (the targets read the shipped policies and the development keys).
enum FuzzTargets {
    /// Every target, by the name `scripts/fuzz.sh` uses.
    static let all: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = [
        "json": json, "jsonrpc": jsonRPC, "jws": jws, "arguments": arguments, "policy": policy, "tls": tls, "sse": sse,
        "http1": http1,
    ]

    /// StrictJSON: whatever it accepts serialises to text it accepts again, as the same value.
    static func json(_ bytes: UnsafeRawBufferPointer) {
        guard let value = try? JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 64, maximumBytes: 1 << 20)) else { return }
        let text = value.serializedBytes
        guard let again = try? JSONParser.parse(text, limits: JSONLimits(maximumDepth: 64, maximumBytes: 1 << 22)) else {
            fatalError("StrictJSON refuses its own serialisation: \(String(decoding: text, as: UTF8.self).prefix(200))")
        }
        guard again == value else { fatalError("StrictJSON round trip changed the value") }
    }

    /// The POST body path (see `FuzzEntryPoints.jsonRPCBody`).
    static func jsonRPC(_ bytes: UnsafeRawBufferPointer) { FuzzEntryPoints.jsonRPCBody(bytes) }

    /// The development verifier (acme and globex, RS256 and HS256 keys): a token is verified, and the same token
    /// verified again gives the same answer (the second time from the cache when it was accepted).
    static func jws(_ bytes: UnsafeRawBufferPointer) {
        let token = String(decoding: bytes, as: UTF8.self)
        let now = Date(timeIntervalSince1970: 1_795_700_000)  // inside the validity of the seed tokens (minted 2026-11-25, 30 days)
        let first = Result { () throws(AuthenticationError) in try Shared.verifier.verify(token, now: now) }
        let second = Result { () throws(AuthenticationError) in try Shared.verifier.verify(token, now: now) }
        switch (first, second) {
        case (.success(let a), .success(let b)) where a == b: break
        case (.failure(let a), .failure(let b)) where a == b: break
        default: fatalError("the verifier answered one token two ways")
        }
    }

    /// Argument canonicalisation and the policy decision for a `tools/call` whose arguments are the input (as JSON),
    /// against the shipped policies: deciding twice gives the same answer.
    static func arguments(_ bytes: UnsafeRawBufferPointer) {
        guard let value = try? JSONParser.parse(bytes, limits: JSONLimits(maximumDepth: 64, maximumBytes: 1 << 20)) else { return }
        let tool = ["read_file", "query_db", "run_command", "write_file"][Int(bytes.first ?? 0) % 4]
        let request = PolicyRequest(tenant: "acme", agent: "bot1", scopes: ["tools:read"], target: tool, arguments: value)
        let set = Shared.policy.tenants["acme"]!
        guard set.evaluate(request) == set.evaluate(request) else { fatalError("one call decided two ways") }
    }

    /// The policy document loader.
    static func policy(_ bytes: UnsafeRawBufferPointer) {
        _ = try? PolicyDocument.parse(Array(bytes), file: "fuzz.json", defaultName: "fuzz")
    }

    /// The TLS server handler (OpenSSL) fed the input as the records of a client, in an embedded channel.
    static func tls(_ bytes: UnsafeRawBufferPointer) {
        let channel = EmbeddedChannel()
        do {
            try channel.pipeline.syncOperations.addHandler(TLSHandler(context: Shared.tlsServer, logger: Shared.quiet))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            let split = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
            try channel.writeInbound(ByteBuffer(bytes: bytes[..<split]))
            try channel.writeInbound(ByteBuffer(bytes: bytes[split...]))
        } catch {
            // Refusing the bytes is the expected outcome for almost every input.
        }
        while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
        // An embedded loop's clock stands still: the handler's timers (handshake deadline, the wait for a
        // close_notify to go out) would hold the channel for ever. Time is moved on, as a real loop's would.
        _ = channel.close()
        channel.embeddedEventLoop.advanceTime(by: .seconds(120))
        while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    /// The SSE event filter with list filtering and task-handle sealing (see `FuzzEntryPoints.sseStream`); the
    /// input also goes through the filter for complete JSON answers.
    static func sse(_ bytes: UnsafeRawBufferPointer) {
        FuzzEntryPoints.sseStream(bytes, policy: Shared.policy)
        FuzzEntryPoints.listAnswer(Array(bytes), policy: Shared.policy)
    }

    /// HTTP/1.1 request and response framing (see `FuzzEntryPoints.http1`): the same parts however the bytes are read.
    static func http1(_ bytes: UnsafeRawBufferPointer) { FuzzEntryPoints.http1(bytes) }

    /// What the targets share, built once.
    enum Shared {
        static let root = FileManager.default.currentDirectoryPath
        static let policy: PolicySnapshot = {
            do {
                return try PolicySnapshot.load(directory: root + "/policies")
            } catch {
                fatalError("run from the repository root: \(error)")
            }
        }()
        /// The development configuration's authenticator (mcpgw.dev.json).
        static let authenticator: Authenticator = {
            do {
                let document = try JSONObjectReader(
                    try JSONParser.parse(Array(FileManager.default.contents(atPath: root + "/mcpgw.dev.json")!)))
                return try IdentityConfiguration.read(
                    identity: try document.object("identity"), tenants: try document.object("tenants")!, baseDirectory: root,
                    otherTenantKeys: ["upstream"]
                ).makeAuthenticator()
            } catch {
                fatalError("run from the repository root: \(error)")
            }
        }()
        static let verifier: JWTVerifier = authenticator.tokens
        static let tlsServer: TLSContext = {
            do {
                return try TLSContext(
                    role: .server,
                    configuration: TLSConfiguration(
                        certificateChainFile: root + "/certs-dev/server.pem", privateKeyFile: root + "/certs-dev/server.key",
                        trustedCABundles: [.init(label: "acme", path: root + "/certs-dev/acme/ca.pem")], clientAuthentication: .optional))
            } catch {
                fatalError("run from the repository root: \(error)")
            }
        }()
        static let quiet = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    }
}

import Foundation
import Identity
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StrictJSON
import TestSupport
import Testing

@testable import Gateway

/// mcpgw as an OAuth 2.0 resource server: RFC 9728 metadata (per tenant and shared) and the `401` that points to it,
/// RFC 8707 audiences, `insufficient_scope` step-up, and `401` texts that say what kind of failure it was but never
/// what is configured.
@Suite("OAuth resource server", .serialized)
struct OAuthResourceTests {
    static let origin = "https://gateway.test"
    static let acmeResource = origin + "/tenants/acme/mcp"

    /// The dev configuration, published as a protected resource: acme with its own authorization server, and a
    /// shared one for the MCP endpoint itself.
    static func start(_ upstream: RecordingUpstream) async throws -> GatewayFixture {
        try await GatewayFixture.start(
            upstream: upstream.url,
            editConfiguration: { text in
                text.replacingOccurrences(
                    of: #""identity": {"#,
                    with: #""identity": {"public_url": "\#(origin)", "oauth": {"authorization_servers": ["https://shared-as.test"]},"#
                ).replacingOccurrences(
                    of: #""acme": {"#,
                    with:
                        #""acme": {"oauth": {"authorization_servers": ["https://as.acme.test"], "scopes_supported": ["tools:read", "tools:write"]},"#
                )
            })
    }

    static func bearer(_ token: String) -> [(String, String)] { [("Authorization", "Bearer \(token)")] }

    @Test("a 401 points to the metadata of the resource the client asked for, and that document is served")
    func metadataAndChallenge() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.start(upstream)
        let client = gateway.client(nil)

        let tenantChallenge = try await client.send(path: "/tenants/acme/mcp", body: RPC.call("read_file"))
        #expect(tenantChallenge.status == 401)
        let header = try #require(tenantChallenge.header("www-authenticate"))
        #expect(header.contains(#"resource_metadata="https://gateway.test/.well-known/oauth-protected-resource/tenants/acme/mcp""#))
        #expect(header.contains(#"scope="tools:read tools:write""#))
        #expect(!header.contains("error="), "no credentials: no error code (RFC 6750 §3.1)")

        let document = try await client.send(.GET, path: "/.well-known/oauth-protected-resource/tenants/acme/mcp")
        #expect(document.status == 200)
        let metadata = try #require(try JSONParser.parse(document.body).objectValue)
        #expect(metadata["resource"] == .string(Self.acmeResource))
        #expect(metadata["authorization_servers"] == .array([.string("https://as.acme.test")]))
        #expect(metadata["bearer_methods_supported"] == .array([.string("header")]))

        let shared = try await client.send(body: RPC.call("read_file"))
        #expect(
            shared.header("www-authenticate")?.contains(
                #"resource_metadata="https://gateway.test/.well-known/oauth-protected-resource/mcp""#) == true)
        let sharedDocument = try await client.send(.GET, path: "/.well-known/oauth-protected-resource/mcp")
        #expect(try JSONParser.parse(sharedDocument.body).objectValue?["resource"] == .string(Self.origin + "/mcp"))

        // No such resource: 404, recorded. globex has no oauth section.
        #expect(try await client.send(.GET, path: "/.well-known/oauth-protected-resource/tenants/globex/mcp").status == 404)
        // The endpoint of a tenant that does not exist answers as globex's does (which has no metadata of its own):
        // without credentials 401, to another tenant's agent 403. Nothing tells which tenants exist.
        let nobody = try await client.send(path: "/tenants/nobody/mcp", body: RPC.call("read_file"))
        let globex = try await client.send(path: "/tenants/globex/mcp", body: RPC.call("read_file"))
        #expect(nobody.status == 401 && globex.status == 401)
        #expect(nobody.header("www-authenticate") == globex.header("www-authenticate") && nobody.body == globex.body)
        let agent = gateway.client("acme/agents/bot1")
        let foreignNobody = try await agent.send(path: "/tenants/nobody/mcp", body: RPC.call("read_file"))
        let foreignGlobex = try await agent.send(path: "/tenants/globex/mcp", body: RPC.call("read_file"))
        #expect(foreignNobody.status == 403 && foreignGlobex.status == 403 && foreignNobody.body == foreignGlobex.body)
        #expect(upstream.received.isEmpty)
        let records = try gateway.auditRecords()
        #expect(records.filter { $0["rule"] == .string("oauth_metadata") }.count == 2)
        #expect(records.filter { $0["rule"] == .string("path") }.count == 1)
        #expect(records.filter { $0["rule"] == .string("tenant_path") }.count == 2)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("metadata requests without credentials count toward the connection's bound; anonymous records name no session")
    func anonymousRequestsBounded() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.start(upstream)
        let anonymous = try await RawTLSClient.connect(port: gateway.port, agent: nil)
        // Found in review: the public document was answered, and recorded, without end on one connection.
        let get = "GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
        try await anonymous.send(String(repeating: get, count: 40))
        #expect(await anonymous.waitForClose(), "the connection stayed open")
        #expect(statusLines(anonymous.text).count == MCPConnectionHandler.maximumUnauthenticatedAnswers)
        #expect(try gateway.auditRecords().filter { $0["rule"] == .string("oauth_metadata") }.count == 16)
        // The requests after the one that closed the connection are dropped unread (RFC 9112), so no record either.
        try await Task.sleep(for: .milliseconds(300))
        let all = try gateway.auditRecords()
        #expect(all.count == 16, "\(all.map { $0["rule"]?.stringValue ?? "-" })")
        // A session id the caller chose is not written to the log before it authenticates.
        let client = gateway.client(nil)
        let refused = try await client.send(
            path: "/mcp", body: RPC.call("read_file"), headers: [("Mcp-Session-Id", "someone-elses-session")])
        #expect(refused.status == 401)
        let records = try gateway.auditRecords()
        #expect(!records.contains { $0["session_id"] != nil }, "\(records.filter { $0["session_id"] != nil })")
        await anonymous.close()
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("RFC 8707: a token for this resource or the configured audience is accepted; one for another resource is not")
    func audience() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.start(upstream)
        let client = gateway.client(nil)
        for (audience, status) in [
            (Self.acmeResource, 200), ("mcpgw", 200), (Self.origin + "/mcp", 200), (Self.origin + "/tenants/globex/mcp", 401),
            ("https://evil.test/tenants/acme/mcp", 401), (Self.acmeResource + "/", 401),
        ] {
            let token = try GatewayFixture.token(audience: audience)
            let response = try await client.send(path: "/tenants/acme/mcp", body: RPC.call("read_file"), headers: Self.bearer(token))
            #expect(response.status == status, "aud \(audience)")
            if status == 401 {
                #expect(
                    try JSONParser.parse(response.body).objectValue?["error"]?.objectValue?["data"]
                        == .object(JSONObject(["code": .string("wrong_audience")])))
            }
        }
        #expect(upstream.received.count == 3)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a tenant's endpoint serves only that tenant's agents")
    func tenantEndpoint() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.start(upstream)
        let globex = try GatewayFixture.token(tenant: "globex")
        let response = try await gateway.client(nil).send(
            path: "/tenants/acme/mcp", body: RPC.call("read_file"), headers: Self.bearer(globex))
        // A token alone: not issued for this resource, 401 with the challenge (found by review: a 403 without one).
        #expect(response.status == 401 && response.body.contains("wrong_tenant"), "\(response.status) \(response.body)")
        #expect(response.header("www-authenticate")?.contains(#"error="invalid_token""#) == true, "\(response.headers)")
        let certificate = try await gateway.client("globex/agents/bot1").send(path: "/tenants/acme/mcp", body: RPC.call("read_file"))
        #expect(certificate.status == 403)
        #expect(upstream.received.isEmpty)
        #expect(try gateway.auditRecords().filter { $0["rule"] == .string("tenant_path") }.count == 2)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("a call its policy allows only with more scopes gets 403 insufficient_scope listing them, and is recorded")
    func insufficientScope() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.start(upstream)
        let query = RPC.call("query_db", #"{"sql":"select 1"}"#, id: 5)
        let without = try GatewayFixture.token(scopes: [])
        let refused = try await gateway.client(nil).send(path: "/tenants/acme/mcp", body: query, headers: Self.bearer(without))
        #expect(refused.status == 403)
        let header = try #require(refused.header("www-authenticate"))
        #expect(header.contains(#"error="insufficient_scope""#) && header.contains(#"scope="tools:read""#))
        #expect(header.contains(#"resource_metadata="https://gateway.test/.well-known/oauth-protected-resource/tenants/acme/mcp""#))
        let error = try JSONParser.parse(refused.body).objectValue?["error"]?.objectValue
        #expect(error?["data"]?.objectValue?["required_scopes"] == .array([.string("tools:read")]))
        #expect(upstream.received.isEmpty)

        // A call denied for another reason too (a denied tool) is a plain denial, not a step-up.
        let denied = try await gateway.client(nil).send(
            path: "/tenants/acme/mcp", body: RPC.call("delete_file", #"{"path":"a"}"#), headers: Self.bearer(without))
        #expect(denied.status == 200 && denied.header("www-authenticate") == nil)

        let with = try GatewayFixture.token(scopes: ["tools:read"])
        #expect(try await gateway.client(nil).send(path: "/tenants/acme/mcp", body: query, headers: Self.bearer(with)).status == 200)
        let records = try gateway.auditRecords().filter { $0["target"] == .string("query_db") }
        #expect(records.map { $0["decision"] } == [.string("deny"), .string("audit")])
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("401 texts name the kind of failure, never the configured kids, algorithms, issuers or audiences")
    func unrevealingTexts() async throws {
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.start(upstream)
        let good = try GatewayFixture.token()
        let parts = good.split(separator: ".").map(String.init)
        func encoded(_ json: String) -> String { Base64URL.encode(Array(json.utf8)) }
        let now = Int(Date().timeIntervalSince1970)
        let claims = #"{"iss":"https://issuer.mcpgw.dev/acme","aud":"mcpgw","tenant":"acme","sub":"bot1","exp":\#(now + 600)}"#
        let cases: [(String, String, String)] = [
            ("expired", try GatewayFixture.token(lifetime: -3600), "token_expired"),
            ("bad signature", parts[0] + "." + parts[1] + ".AAAA" + parts[2].dropFirst(4), "bad_signature"),
            ("unknown kid", encoded(#"{"alg":"RS256","kid":"nope"}"#) + "." + encoded(claims) + ".AAAA", "unknown_key"),
            ("alg mismatch", encoded(#"{"alg":"HS256","kid":"acme-rs256"}"#) + "." + encoded(claims) + ".AAAA", "bad_signature"),
            ("alg none", encoded(#"{"alg":"none"}"#) + "." + encoded(claims) + ".", "malformed_token"),  // empty signature: refused unread
            ("no kid, issuer with two keys", encoded(#"{"alg":"RS256"}"#) + "." + encoded(claims) + ".AAAA", "unknown_key"),
            (
                "unknown issuer",
                encoded(#"{"alg":"RS256"}"#) + "." + encoded(claims.replacingOccurrences(of: "issuer.mcpgw.dev", with: "other.test"))
                    + ".AAAA",
                "untrusted_issuer"
            ),
            ("wrong audience", try GatewayFixture.token(audience: "https://elsewhere.test"), "wrong_audience"),
            ("garbage", "not-a-token", "malformed_token"),
        ]
        let configuration = [
            "acme-rs256", "acme-hs256", "RS256", "HS256", "issuer.mcpgw.dev", "has 2 keys", "kid", "'mcpgw'", "audience does not include",
        ]
        for (name, token, code) in cases {
            let response = try await gateway.client(nil).send(
                path: "/tenants/acme/mcp", body: RPC.call("read_file"), headers: Self.bearer(token))
            #expect(response.status == 401, "\(name)")
            let seen = response.body + (response.header("www-authenticate") ?? "")
            for secret in configuration {
                #expect(!seen.contains(secret), "\(name): the answer reveals '\(secret)': \(seen)")
            }
            let data = try JSONParser.parse(response.body).objectValue?["error"]?.objectValue?["data"]
            #expect(data == .object(JSONObject(["code": .string(code)])), "\(name): \(response.body)")
        }
        // The audit log keeps the detail.
        let reasons = try gateway.auditRecords().compactMap { $0["reason"]?.stringValue }
        #expect(reasons.contains { $0.contains("no key with kid 'nope'") })
        #expect(reasons.contains { $0.contains("registered for RS256") })
        #expect(reasons.contains { $0.contains("has 2 keys") })
        #expect(upstream.received.isEmpty)
        try await gateway.stop()
        await upstream.stop()
    }

    @Test("every authentication failure's public text is one of the general ones")
    func publicTexts() {
        let errors: [AuthenticationError] = [
            .noCredentials, .tokenTooLarge(bytes: 9000, limit: 8192), .malformedToken("header 'kid' is not a string"), .algorithmNone,
            .unsupportedAlgorithm("ES999"), .algorithmMismatch(header: "HS256", key: .rs256), .unknownKeyID("acme-rs256"),
            .keyNotSelectable("issuer 'https://issuer.mcpgw.dev/acme' has 2 keys"), .badSignature, .expired(exp: 1, now: 2),
            .notYetValid(nbf: 3, now: 2), .issuedInFuture(iat: 3, now: 2), .missingClaim("tenant"), .invalidClaim("scp", reason: "x"),
            .wrongIssuer("https://issuer.mcpgw.dev/acme"), .wrongAudience(expected: "mcpgw-secret-audience"), .unknownTenant("acme"),
            .tenantMismatch("tenant 'acme' vs 'globex'"), .agentMismatch(certificate: "bot1", token: "bot2"),
            .certificateRefused("CN=bot1"), .inactiveToken("revoked at the AS"),
        ]
        for error in errors {
            for detail in ["acme", "globex", "issuer.mcpgw.dev", "RS256", "HS256", "ES999", "mcpgw-secret-audience", "bot1", "8192"] {
                #expect(!error.publicReason.contains(detail), "\(error.code): \(error.publicReason)")
                #expect(!error.publicCode.contains(detail))
            }
        }
    }
}

/// Opaque tokens checked by RFC 7662 introspection at the tenant's authorization server (a scripted HTTPS server
/// here, which records what the gateway asked).
@Suite("Token introspection", .serialized)
struct IntrospectionTests {
    @Test("one client source holds at most its share of a tenant's introspections in flight; other sources still get theirs")
    func introspectionsInFlightPerSource() async throws {
        let authorizationServer = try await RecordingUpstream.start(.hang, tls: try HTTPSUpstreamTests.serverContext())
        let settings = IntrospectionSettings(
            url: authorizationServer.url, clientID: "mcpgw", clientSecret: "s", caFile: DevPKI.gatewayCA, cacheSeconds: 60,
            cacheSize: 100, agentClaim: "sub")
        let introspector = try TokenIntrospector(
            settings: ["acme": settings], audiences: ["acme": ["mcpgw"]], eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            logger: Logger(label: "introspection-test"), timeout: .seconds(3))
        let share = TokenIntrospector.maximumInFlightPerSource
        let held = (0..<share).map { introspector.introspect("flood-\($0)", tenant: "acme", source: "192.0.2.7") }
        // The next one from that source is refused at once; another source is still asked (it waits like the others).
        let refused = try await introspector.introspect("flood-more", tenant: "acme", source: "192.0.2.7").get()
        guard case .unavailable(let why) = refused else { Issue.record("got \(refused)"); return }
        #expect(why.contains("source address"))
        let other = introspector.introspect("someone-else", tenant: "acme", source: "198.51.100.1")
        // Each asks over a TLS connection of its own: under a loaded test run the handshakes take a while (bounded
        // wait, well inside the introspections' 3 s timeout).
        for _ in 0..<50 where authorizationServer.received.count < share + 1 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(authorizationServer.received.count == share + 1, "the other source's token was not asked")
        for future in held + [other] {
            guard case .unavailable(let why) = try await future.get() else {
                Issue.record("a held introspection did not time out"); continue
            }
            #expect(!why.contains("source address"))
        }
        // Their slots are free again.
        let again = try await introspector.introspect("flood-again", tenant: "acme", source: "192.0.2.7").get()
        guard case .unavailable(let timedOut) = again else { Issue.record("got \(again)"); return }
        #expect(!timedOut.contains("in flight"))
        await authorizationServer.stop()
    }

    @Test("each tenant's answers are cached apart: one tenant's flood of tokens never evicts another tenant's answers")
    func cacheSizedPerTenant() async throws {
        let authorizationServer = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#) },
            tls: try HTTPSUpstreamTests.serverContext())
        func settings(cacheSize: Int) -> IntrospectionSettings {
            IntrospectionSettings(
                url: authorizationServer.url, clientID: "mcpgw", clientSecret: "s", caFile: DevPKI.gatewayCA, cacheSeconds: 600,
                cacheSize: cacheSize, agentClaim: "sub")
        }
        let introspector = try TokenIntrospector(
            settings: ["acme": settings(cacheSize: 4), "globex": settings(cacheSize: 100)],
            audiences: ["acme": ["mcpgw"], "globex": ["mcpgw"]], eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            logger: Logger(label: "introspection-test"))
        for index in 0..<30 {
            guard case .principal = try await introspector.introspect("globex-\(index)", tenant: "globex", source: "198.51.100.1").get()
            else { Issue.record("globex's token was not accepted"); return }
        }
        // Found by review: one cache for all tenants, trimmed to the size of whichever tenant inserted: a few tokens of
        // acme (its cache_size is 4) evicted nearly all of globex's answers.
        for index in 0..<6 { _ = try await introspector.introspect("acme-\(index)", tenant: "acme", source: "192.0.2.7").get() }
        let asked = authorizationServer.received.count
        #expect(asked == 36)
        for index in 0..<30 { _ = try await introspector.introspect("globex-\(index)", tenant: "globex", source: "198.51.100.1").get() }
        #expect(authorizationServer.received.count == asked, "globex's answers were evicted by acme's tokens")
        // acme's own cache keeps to its size: of its six tokens, at most four are remembered.
        for index in 0..<6 { _ = try await introspector.introspect("acme-\(index)", tenant: "acme", source: "192.0.2.7").get() }
        #expect(authorizationServer.received.count >= asked + 2)
        await authorizationServer.stop()
    }

    @Test("a full cache drops inactive answers before active ones: made-up tokens do not send agents back to the server")
    func inactiveAnswersEvictedFirst() async throws {
        let authorizationServer = try await RecordingUpstream.start(
            .withStatus { request in
                request.body.contains("token=good-")
                    ? (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#)
                    : (200, "application/json", #"{"active":false}"#)
            }, tls: try HTTPSUpstreamTests.serverContext())
        let settings = IntrospectionSettings(
            url: authorizationServer.url, clientID: "mcpgw", clientSecret: "s", caFile: DevPKI.gatewayCA, cacheSeconds: 600,
            cacheSize: 64, agentClaim: "sub")
        let introspector = try TokenIntrospector(
            settings: ["globex": settings], audiences: ["globex": ["mcpgw"]], eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            logger: Logger(label: "introspection-test"))
        for index in 0..<30 { _ = try await introspector.introspect("good-\(index)", tenant: "globex", source: "198.51.100.1").get() }
        // Found by review: anyone can send made-up tokens to a tenant's endpoint; their answers evicted active ones.
        for index in 0..<200 { _ = try await introspector.introspect("made-up-\(index)", tenant: "globex", source: "192.0.2.7").get() }
        let asked = authorizationServer.received.count
        #expect(asked == 230)
        for index in 0..<30 { _ = try await introspector.introspect("good-\(index)", tenant: "globex", source: "198.51.100.1").get() }
        #expect(authorizationServer.received.count == asked, "active answers were evicted by made-up tokens")
        await authorizationServer.stop()
    }

    @Test("a tenant's lookups reuse one kept-alive connection to its authorization server, not a handshake each")
    func lookupsReuseConnections() async throws {
        let authorizationServer = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#) },
            tls: try HTTPSUpstreamTests.serverContext())
        let introspector = try TokenIntrospector(
            settings: ["acme": Self.settings(authorizationServer)], audiences: ["acme": ["mcpgw"]],
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "introspection-test"))
        for index in 0..<5 {
            guard case .principal = try await introspector.introspect("token-\(index)", tenant: "acme", source: "192.0.2.7").get()
            else { Issue.record("token-\(index) was not accepted"); return }
        }
        let asked = authorizationServer.received
        #expect(asked.count == 5)
        #expect(Set(asked.map(\.peerPort)).count == 1, "each lookup opened a connection: \(asked.map(\.peerPort))")
        await authorizationServer.stop()
    }

    @Test("a kept-alive connection the authorization server closed instead of answering is retried once on a new one")
    func closedConnectionRetried() async throws {
        let closedOnce = NIOLockedValueBox(false)
        let authorizationServer = try await RecordingUpstream.start(
            .routed { request in
                let close =
                    request.body.contains("token=second")
                    && closedOnce.withLockedValue { closed in
                        defer { closed = true }
                        return !closed
                    }
                return close ? .close : .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#) }
            }, tls: try HTTPSUpstreamTests.serverContext())
        let introspector = try TokenIntrospector(
            settings: ["acme": Self.settings(authorizationServer)], audiences: ["acme": ["mcpgw"]],
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "introspection-test"))
        guard case .principal = try await introspector.introspect("first", tenant: "acme", source: "192.0.2.7").get() else {
            Issue.record("the first token was not accepted"); return
        }
        let second = try await introspector.introspect("second", tenant: "acme", source: "192.0.2.7").get()
        guard case .principal = second else { Issue.record("the retried lookup failed: \(second)"); return }
        let asked = authorizationServer.received
        #expect(asked.count == 3)
        #expect(Set(asked.map(\.peerPort)).count == 2)
        await authorizationServer.stop()
    }

    @Test("the retry goes out on a new connection, not on another idle one that may be just as stale (a restarted server)")
    func retryOnANewConnection() async throws {
        // After the "restart", every request on a connection opened before it is closed unanswered.
        let state = NIOLockedValueBox((restarted: false, before: Set<Int>()))
        let authorizationServer = try await RecordingUpstream.start(
            .routed { request in
                let stale = state.withLockedValue { state in
                    guard let port = request.peerPort else { return false }
                    if !state.restarted { state.before.insert(port) }
                    return state.restarted && state.before.contains(port)
                }
                return stale ? .close : .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#) }
            }, tls: try HTTPSUpstreamTests.serverContext())
        let introspector = try TokenIntrospector(
            settings: ["acme": Self.settings(authorizationServer)], audiences: ["acme": ["mcpgw"]],
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Logger(label: "introspection-test"))
        // Two lookups at once: two connections, both idle afterwards.
        let both = ["one", "two"].map { introspector.introspect($0, tenant: "acme", source: "192.0.2.7") }
        for lookup in both {
            guard case .principal = try await lookup.get() else { Issue.record("a first lookup failed"); return }
        }
        #expect(Set(authorizationServer.received.map(\.peerPort)).count == 2)
        state.withLockedValue { $0.restarted = true }
        let third = try await introspector.introspect("three", tenant: "acme", source: "192.0.2.7").get()
        guard case .principal = third else { Issue.record("retried on the other stale connection: \(third)"); return }
        await authorizationServer.stop()
    }

    /// Introspection settings for `authorizationServer` (client `mcpgw`), answers cached for a minute.
    static func settings(_ authorizationServer: RecordingUpstream) -> IntrospectionSettings {
        IntrospectionSettings(
            url: authorizationServer.url, clientID: "mcpgw", clientSecret: "s", caFile: DevPKI.gatewayCA, cacheSeconds: 60,
            cacheSize: 100, agentClaim: "sub")
    }

    /// A gateway in front of `upstream` whose tenant acme introspects opaque tokens at `authorizationServer` (client
    /// `mcpgw`, secret `s3cret`).
    static func introspectingGateway(upstream: RecordingUpstream, authorizationServer: RecordingUpstream) async throws -> GatewayFixture {
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("introspection-\(UUID())").path
        try "s3cret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let introspection =
            #"{"authorization_servers": ["https://as.acme.test"], "introspection": {"url": "\#(authorizationServer.url)", "client_id": "mcpgw", "client_secret_file": "\#(secret)", "ca_file": "\#(DevPKI.gatewayCA)"}}"#
        return try await GatewayFixture.start(
            upstream: upstream.url,
            editConfiguration: {
                $0.replacingOccurrences(of: #""identity": {"#, with: #""identity": {"public_url": "https://gateway.test","#)
                    .replacingOccurrences(of: #""acme": {"#, with: #""acme": {"oauth": \#(introspection),"#)
            })
    }

    @Test(
        "an active opaque token becomes acme's principal; inactive, foreign-audience and unanswerable ones are refused; answers are cached")
    func introspection() async throws {
        let authorizationServer = try await RecordingUpstream.start(
            .withStatus { request in
                let token = request.body.split(separator: "&").first { $0.hasPrefix("token=") }?.dropFirst(6) ?? ""
                switch token {
                case "opaque-good": return (200, "application/json", #"{"active":true,"sub":"bot7","scope":"tools:read","aud":"mcpgw"}"#)
                case "opaque-elsewhere": return (200, "application/json", #"{"active":true,"sub":"bot7","aud":"https://other.test"}"#)
                case "opaque-broken": return (500, "text/plain", "oops")
                // An expiry in the past written with an exponent, and one that is not a number.
                case "opaque-old": return (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw","exp":1.0e9}"#)
                case "opaque-someday": return (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw","exp":"soon"}"#)
                default: return (200, "application/json", #"{"active":false}"#)
                }
            }, tls: try HTTPSUpstreamTests.serverContext())
        let upstream = try await RecordingUpstream.start(.json)
        let gateway = try await Self.introspectingGateway(upstream: upstream, authorizationServer: authorizationServer)
        let client = gateway.client(nil)
        func call(_ token: String) async throws -> TestHTTPClient.Response {
            try await client.send(path: "/tenants/acme/mcp", body: RPC.call("read_file"), headers: [("Authorization", "Bearer \(token)")])
        }
        #expect(try await call("opaque-good").status == 200)
        #expect(try await call("opaque-good").status == 200)
        #expect(authorizationServer.received.count == 1, "the second use was not answered from the cache")
        let asked = try #require(authorizationServer.received.first)
        #expect(asked.body == "token=opaque-good&token_type_hint=access_token")
        #expect(asked.header("authorization") == "Basic " + "bWNwZ3c6czNjcmV0")
        #expect(upstream.received.count == 2)

        let inactive = try await call("opaque-revoked")
        #expect(inactive.status == 401 && inactive.body.contains("token_inactive"))
        #expect(try await call("opaque-elsewhere").status == 401)
        #expect(try await call("opaque-broken").status == 503)
        #expect(try await call("opaque-old").status == 401)
        #expect(try await call("opaque-someday").status == 401)
        // Longer than identity.max_token_bytes: refused without asking the authorization server (found by review).
        let askedSoFar = authorizationServer.received.count
        let huge = try await call(String(repeating: "A", count: 9000))
        #expect(huge.status == 401)
        #expect(authorizationServer.received.count == askedSoFar, "a 9,000-byte opaque token was sent on")
        // On /mcp, the only tenant with introspection covers it.
        #expect(try await client.send(body: RPC.call("read_file"), headers: [("Authorization", "Bearer opaque-good")]).status == 200)
        #expect(upstream.received.count == 3)

        let records = try gateway.auditRecords()
        let allowed = records.filter { $0["decision"] == .string("allow") }
        #expect(
            allowed.count == 3 && allowed.allSatisfy { $0["auth_method"] == .string("introspection") && $0["agent"] == .string("bot7") })
        #expect(records.contains { $0["rule"] == .string("introspection_unavailable") })
        try await gateway.stop()
        await upstream.stop()
        await authorizationServer.stop()
    }

    @Test("a listening stream opened with an introspected token is not ended by an identity reload (it is not a JWT to verify again)")
    func introspectedStreamOutlivesAReload() async throws {
        let authorizationServer = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","scope":"tools:read","aud":"mcpgw"}"#) },
            tls: try HTTPSUpstreamTests.serverContext())
        let upstream = try await RecordingUpstream.start(.gatedStream)
        let gateway = try await Self.introspectingGateway(upstream: upstream, authorizationServer: authorizationServer)
        let client = try await RawTLSClient.connect(port: gateway.port, agent: nil)
        try await client.send(
            "GET /tenants/acme/mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nAuthorization: Bearer opaque-good\r\n\r\n")
        #expect(await client.wait { $0.contains("HTTP/1.1 200") && $0.contains("data:") }, "\(client.text)")
        gateway.services.identity.replace(with: gateway.services.authenticator)
        try await Task.sleep(for: .milliseconds(300))
        #expect(!client.isClosed, "an identity reload ended a stream whose token it cannot verify itself")
        #expect(try gateway.auditRecords().allSatisfy { $0["rule"] != .string("credentials_refused") })
        await client.close()
        try await gateway.stop()
        await upstream.stop()
        await authorizationServer.stop()
    }

    @Test("a tenant a reload removed is refused for opaque tokens (cached answers too), and its introspected streams end")
    func removedTenantRefused() async throws {
        let authorizationServer = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","scope":"tools:read","aud":"mcpgw"}"#) },
            tls: try HTTPSUpstreamTests.serverContext())
        let upstream = try await RecordingUpstream.start(
            .routed { request in request.method == "GET" ? .gatedStream : .json })
        let gateway = try await Self.introspectingGateway(upstream: upstream, authorizationServer: authorizationServer)
        let call = {
            try await gateway.client(nil).send(
                path: "/tenants/acme/mcp", body: RPC.call("read_file"), headers: [("Authorization", "Bearer opaque-good")])
        }
        #expect(try await call().status == 200)
        let stream = try await RawTLSClient.connect(port: gateway.port, agent: nil)
        try await stream.send(
            "GET /tenants/acme/mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nAuthorization: Bearer opaque-good\r\n\r\n")
        #expect(await stream.wait { $0.contains("HTTP/1.1 200") && $0.contains("data:") }, "\(stream.text)")
        // The reload: the same authenticator without acme (found by review: its opaque tokens were still introspected).
        let old = gateway.services.authenticator
        gateway.services.identity.replace(
            with: Authenticator(certificates: old.certificates, tokens: old.tokens, tenants: old.tenants.subtracting(["acme"])))
        #expect(await stream.waitForClose(), "the removed tenant's stream is still open")
        let refused = try await call()
        #expect(refused.status == 401, "\(refused.status) \(refused.body)")
        #expect(upstream.received.filter { $0.method == "POST" }.count == 1)
        #expect(try gateway.auditRecords().contains { $0["rule"] == .string("credentials_refused") })
        try await gateway.stop()
        await upstream.stop()
        await authorizationServer.stop()
    }

    @Test("an answer naming another tenant or a foreign issuer is refused; a shared endpoint must name the tenant")
    func introspectionTenantAndIssuer() async throws {
        let server = try await RecordingUpstream.start(
            .withStatus { request in
                let token = request.body.split(separator: "&").first { $0.hasPrefix("token=") }?.dropFirst(6) ?? ""
                switch token {
                case "tok-globex": return (200, "application/json", #"{"active":true,"sub":"mallory","tenant":"globex","aud":"mcpgw"}"#)
                case "tok-foreign-iss":
                    return (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw","iss":"https://evil.test"}"#)
                case "tok-acme":
                    return (
                        200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw","tenant":"acme","iss":"https://as.test/"}"#
                    )
                default: return (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#)
                }
            }, tls: try HTTPSUpstreamTests.serverContext())
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("introspection-\(UUID())").path
        try "s3cret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let oauth =
            #"{"authorization_servers": ["https://as.test"], "introspection": {"url": "\#(server.url)", "client_id": "mcpgw", "client_secret_file": "\#(secret)", "ca_file": "\#(DevPKI.gatewayCA)"}}"#
        let upstream = try await RecordingUpstream.start(.json)
        // globex introspects nowhere; at the same URL; at the same origin spelled otherwise; or elsewhere, for the same
        // authorization server (found by review: only the exact URL counted).
        let otherwise = oauth.replacingOccurrences(of: server.url, with: server.url + "?")
        let elsewhere = oauth.replacingOccurrences(of: server.url, with: "https://127.0.0.1:1/introspect")
        // Another realm on the same host (its own path, its own authorization server): a separate server.
        let realm = oauth.replacingOccurrences(of: server.url, with: server.url + "/realms/b")
            .replacingOccurrences(of: "https://as.test", with: "https://as.test/realms/b")
        for globexOAuth in [nil, oauth, otherwise, elsewhere, realm] {
            let shared = globexOAuth != nil && globexOAuth != realm
            let gateway = try await GatewayFixture.start(
                upstream: upstream.url,
                editConfiguration: {
                    var text = $0.replacingOccurrences(of: #""identity": {"#, with: #""identity": {"public_url": "https://gateway.test","#)
                        .replacingOccurrences(of: #""acme": {"#, with: #""acme": {"oauth": \#(oauth),"#)
                    if let globexOAuth {
                        text = text.replacingOccurrences(of: #""globex": {"#, with: #""globex": {"oauth": \#(globexOAuth),"#)
                    }
                    return text
                })
            func call(_ token: String, _ tenant: String = "acme") async throws -> Int {
                try await gateway.client(nil).send(
                    path: "/tenants/\(tenant)/mcp", body: RPC.call("read_file"), headers: [("Authorization", "Bearer \(token)")]
                ).status
            }
            // A token alone naming another tenant is not for this resource: 401 with a challenge (found by review: a
            // 403 "credentials disagree" without one), never served.
            let foreign = try await gateway.client(nil).send(
                path: "/tenants/acme/mcp", body: RPC.call("read_file"), headers: [("Authorization", "Bearer tok-globex")])
            #expect(foreign.status == 401 && foreign.body.contains("wrong_tenant"), "shared: \(shared): \(foreign.body)")
            #expect(foreign.header("www-authenticate")?.contains(#"error="invalid_token""#) == true)
            #expect(try await call("tok-foreign-iss") == 401, "shared: \(shared)")
            #expect(try await call("tok-acme") == 200, "shared: \(shared)")
            // An answer that names no tenant is this tenant's only where the endpoint answers for it alone.
            #expect(try await call("tok-unnamed") == (shared ? 401 : 200), "shared: \(shared)")
            if globexOAuth == oauth { #expect(try await call("tok-acme", "globex") == 401) }
            let refusals = try gateway.auditRecords().filter { $0["decision"] == .string("authentication_failed") }
            #expect(refusals.contains { JSONValue.object($0).serialized.contains("tenant_mismatch") }, "\(refusals)")
            try await gateway.stop()
        }
        await upstream.stop()
        await server.stop()
    }

    @Test("answers are remembered per tenant: a token inactive at one tenant's server is still asked about at another's")
    func cachePerTenant() async throws {
        let acmeServer = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", #"{"active":true,"sub":"bot7","aud":"mcpgw"}"#) },
            tls: try HTTPSUpstreamTests.serverContext())
        let globexServer = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", #"{"active":false}"#) }, tls: try HTTPSUpstreamTests.serverContext())
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("introspection-\(UUID())").path
        try "s3cret\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let upstream = try await RecordingUpstream.start(.json)
        func introspection(_ server: RecordingUpstream, _ issuer: String) -> String {
            #"{"authorization_servers": ["\#(issuer)"], "introspection": {"url": "\#(server.url)", "client_id": "mcpgw", "client_secret_file": "\#(secret)", "ca_file": "\#(DevPKI.gatewayCA)"}}"#
        }
        let gateway = try await GatewayFixture.start(
            upstream: upstream.url,
            editConfiguration: {
                $0.replacingOccurrences(of: #""identity": {"#, with: #""identity": {"public_url": "https://gateway.test","#)
                    .replacingOccurrences(
                        of: #""acme": {"#, with: #""acme": {"oauth": \#(introspection(acmeServer, "https://as.acme.test")),"#
                    )
                    .replacingOccurrences(
                        of: #""globex": {"#, with: #""globex": {"oauth": \#(introspection(globexServer, "https://as.globex.test")),"#)
            })
        func call(_ tenant: String) async throws -> Int {
            try await gateway.client(nil).send(
                path: "/tenants/\(tenant)/mcp", body: RPC.call("read_file"), headers: [("Authorization", "Bearer opaque-shared")]
            ).status
        }
        #expect(try await call("globex") == 401)
        #expect(try await call("acme") == 200)
        #expect(globexServer.received.count == 1 && acmeServer.received.count == 1)
        // Each answer is then remembered for its own tenant.
        #expect(try await call("globex") == 401)
        #expect(try await call("acme") == 200)
        #expect(globexServer.received.count == 1 && acmeServer.received.count == 1)
        try await gateway.stop()
        await upstream.stop()
        await acmeServer.stop()
        await globexServer.stop()
    }
}

import Identity
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TLS
import TestSupport
import Testing

@testable import Gateway

/// The gateway's own HTTPS client for configured URLs (key sets, issuer metadata, introspection): it refuses
/// redirects and oversized answers, and checks the server's certificate.
@Suite("HTTPS fetches of configured URLs", .serialized)
struct HTTPSFetchTests {
    static func fetch(
        _ upstream: RecordingUpstream, caFile: String = DevPKI.gatewayCA, maximumBytes: Int = 1024
    ) async throws
        -> HTTPSFetch.Response
    {
        let fetcher = try HTTPSFetch(url: upstream.url, caFile: caFile, maximumBytes: maximumBytes, timeout: .seconds(5))
        return try await fetcher.send(on: MultiThreadedEventLoopGroup.singleton.next()).get()
    }

    @Test("an answer with a header value that is not stream-safe text is refused, as the gateway's own framing refuses it")
    func streamSafeHeads() {
        // A key server's `Cache-Control` of many combining marks, read as directives: minutes of an event loop for a
        // 1 MiB value (found by review).
        let marks = String(repeating: "\u{0301}\u{0316}", count: 20_000)
        let head = { (value: String) in HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("Cache-Control", value)])) }
        let refusal = HTTPSFetch.refusal(of: head("max-age=\(marks)"), maximumBytes: 1024, acceptStatus: [])
        #expect("\(refusal.map { "\($0)" } ?? "none")".contains("combining marks"))
        #expect(HTTPSFetch.refusal(of: head("max-age=60"), maximumBytes: 1024, acceptStatus: []) == nil)
    }

    @Test("a 2xx answer within the bound is returned; redirects, errors and oversized answers are refused")
    func answers() async throws {
        let cases: [(Int, String, String)] = [
            (200, #"{"keys":[]}"#, "ok"), (302, "", "redirected"), (500, "{}", "status"),
            (200, String(repeating: "x", count: 4096), "tooLarge"),
        ]
        for (status, body, expected) in cases {
            let upstream = try await RecordingUpstream.start(
                .withStatus { _ in (status, "application/json", body) }, tls: try HTTPSUpstreamTests.serverContext())
            do {
                let response = try await Self.fetch(upstream)
                #expect(expected == "ok" && response.body == Array(body.utf8), "\(status)")
            } catch let failure as HTTPSFetch.Failure {
                switch failure {
                case .redirected: #expect(expected == "redirected")
                case .status(let code): #expect(expected == "status" && code == 500)
                case .tooLarge: #expect(expected == "tooLarge")
                default: Issue.record("\(status): \(failure)")
                }
            }
            await upstream.stop()
        }
    }

    @Test("fetches for unknown kids add no refreshes of their own: after a flood the key set is fetched at its own pace")
    func unknownKidFloodLeavesOneRefresh() async throws {
        let n =
            "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
        let jwks = #"{"keys":[{"kty":"RSA","kid":"k1","n":"\#(n)","e":"AQAB"}]}"#
        let server = try await RecordingUpstream.start(
            .withStatus { _ in (200, "application/json", jwks) }, tls: try HTTPSUpstreamTests.serverContext())
        // A set kept 4 s: refreshed every 3.6 s; unknown kids refetch at most once a second.
        let settings = RemoteKeySettings(
            source: .jwks(server.url), caFile: DevPKI.gatewayCA, minimumRefetchSeconds: 1, defaultLifetimeSeconds: 4)
        let fetcher = RemoteKeyFetcher(
            tenants: ["acme": settings], ring: RemoteKeyRing(), eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            logger: Logger(label: "test.keys"))
        #expect(try await fetcher.start().get() == [true])
        for _ in 0..<35 {
            _ = try await fetcher.refetchForUnknownKey(tenant: "acme").get()
            try await Task.sleep(for: .milliseconds(100))
        }
        let before = fetcher.counts(for: "acme").fetches
        try await Task.sleep(for: .seconds(4))
        let quiet = fetcher.counts(for: "acme").fetches - before
        fetcher.stop()
        // One refresh every 3.6 s: one, or two, in 4 s. A refresh added by each of the flood's refetches (three,
        // a second apart) made it four.
        #expect(quiet <= 2, "\(quiet) fetches in 4 quiet seconds")
        await server.stop()
    }

    @Test("a server whose certificate does not chain to the configured CA is not spoken to")
    func untrusted() async throws {
        let upstream = try await RecordingUpstream.start(.json, tls: try HTTPSUpstreamTests.serverContext())
        await #expect(throws: (any Error).self) { try await Self.fetch(upstream, caFile: DevPKI.tenantCA("acme")) }
        #expect(upstream.received.isEmpty)
        await upstream.stop()
    }

    @Test("plain http URLs are refused")
    func plainHTTP() {
        #expect(throws: UpstreamConfigurationError.self) { try HTTPSFetch(url: "http://127.0.0.1/jwks", caFile: nil, maximumBytes: 1) }
    }

    @Test("key set lifetimes follow Cache-Control within bounds; RFC 8414 inserts the well-known segment; metadata must name the issuer")
    func keySetRules() throws {
        let settings = RemoteKeySettings(source: .jwks("https://x.test/jwks"), minimumRefetchSeconds: 30, defaultLifetimeSeconds: 300)
        #expect(RemoteKeyFetcher.lifetime(HTTPHeaders([("Cache-Control", "public, max-age=600")]), settings) == 600)
        #expect(RemoteKeyFetcher.lifetime(HTTPHeaders([("Cache-Control", "max-age=1")]), settings) == 30)
        #expect(RemoteKeyFetcher.lifetime(HTTPHeaders([("Cache-Control", "max-age=99999999")]), settings) == 86_400)
        #expect(RemoteKeyFetcher.lifetime(HTTPHeaders([("Cache-Control", "no-store")]), settings) == 30)
        #expect(RemoteKeyFetcher.lifetime(HTTPHeaders(), settings) == 300)
        #expect(RemoteKeyFetcher.rfc8414URL(issuer: "https://as.test") == "https://as.test/.well-known/oauth-authorization-server")
        #expect(
            RemoteKeyFetcher.rfc8414URL(issuer: "https://as.test/tenant1")
                == "https://as.test/.well-known/oauth-authorization-server/tenant1")
        let good = Array(#"{"issuer":"https://as.test","jwks_uri":"https://as.test/jwks"}"#.utf8)
        #expect(try RemoteKeyFetcher.jwksURI(in: good, issuer: "https://as.test") == "https://as.test/jwks")
        for bad in [
            #"{"issuer":"https://evil.test","jwks_uri":"https://as.test/jwks"}"#,
            #"{"issuer":"https://as.test","jwks_uri":"http://as.test/jwks"}"#,
            #"{"issuer":"https://as.test"}"#, "[]",
        ] {
            #expect(throws: (any Error).self, "\(bad)") { try RemoteKeyFetcher.jwksURI(in: Array(bad.utf8), issuer: "https://as.test") }
        }
    }
}

@Suite("Introspection answers")
struct IntrospectionAnswerTests {
    @Test("an answer's times are read safely: a token not valid yet is refused, an absurd exp refuses without a crash")
    func times() throws {
        let settings = IntrospectionSettings(url: "https://as.test/introspect", clientID: "mcpgw", clientSecret: "s")
        let tenant = TokenIntrospector.Tenant(
            settings: settings, fetch: try HTTPSFetch(url: settings.url, caFile: DevPKI.gatewayCA, maximumBytes: 1024),
            audiences: ["mcpgw"])
        func outcome(_ body: String) -> TokenIntrospector.Outcome {
            TokenIntrospector.outcome(Array(body.utf8), tenant: "acme", configuration: tenant, now: 1_800_000_000)
        }
        func refused(_ body: String) -> Bool {
            if case .refused = outcome(body) { return true }
            return false
        }
        #expect(!refused(#"{"active":true,"sub":"bot7","exp":1800000600,"nbf":1799999000}"#))
        #expect(refused(#"{"active":true,"sub":"bot7","exp":1800000600,"nbf":1800003600}"#), "an nbf an hour ahead")
        #expect(refused(#"{"active":true,"sub":"bot7","nbf":"soon"}"#))
        #expect(!refused(#"{"active":true,"sub":"bot7","nbf":null}"#), "a null nbf is an absent one")
        #expect(refused(#"{"active":true,"sub":"bot7","exp":-1e300}"#))
        #expect(refused(#"{"active":true,"sub":"bot7","exp":-9.3e18}"#))
        // A date no `Int64` of milliseconds holds trapped when a stream's credentials ran out, a year on (found by review).
        #expect(refused(#"{"active":true,"sub":"bot7","exp":1e300}"#))
        #expect(!refused(#"{"active":true,"sub":"bot7","exp":9e14}"#))
        // At most 256 scopes; repeats count once (a set made from every part had room for every repeat: 1 MiB per
        // cached answer from 64 KiB, found by review).
        let distinct = (0..<257).map { "s\($0)" }.joined(separator: " ")
        #expect(refused(#"{"active":true,"sub":"bot7","scope":"\#(distinct)"}"#))
        let repeats = Array(repeating: "a", count: 30_000).joined(separator: " ")
        guard case .principal(let principal) = outcome(#"{"active":true,"sub":"bot7","scope":"\#(repeats) b"}"#) else {
            Issue.record("repeated scopes refused")
            return
        }
        #expect(principal.scopes == ["a", "b"])
    }
}

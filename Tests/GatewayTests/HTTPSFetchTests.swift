import Identity
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

import ArgumentParser
import Foundation
import Gateway
import Identity
import Logging
import NIOPosix
import StrictJSON

/// `mcpgw verify-token`: asks the gateway's own verifier whether it accepts a token, and as whom.
struct VerifyTokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-token",
        abstract: "Verify a bearer token against a gateway configuration; print the principal or the reason for refusal.",
        discussion: "Exit status 0 when accepted, 1 when refused. Reads the token from standard input when TOKEN is -."
    )

    @Option(help: "Gateway configuration file (JSON).")
    var config: String = "mcpgw.dev.json"

    @Argument(help: "The token, or - to read it from standard input.")
    var token: String

    func run() throws {
        let file = try ConfigurationFile.load(config)
        // Keys fetched over HTTPS are fetched once, as `serve` does at start (found by review: a token `serve`
        // accepted was refused here as signed by an unknown key). A fetch that fails leaves those keys out: the
        // answer then says the key is unknown, and the error is on standard error.
        let remote = file.identity.tenants.compactMapValues { $0.jwt?.remoteKeys }
        var ring: RemoteKeyRing?
        if !remote.isEmpty {
            let fetcher = RemoteKeyFetcher(
                tenants: remote, ring: RemoteKeyRing(), eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                logger: Logger(label: "verify-token"))
            let fetched = try fetcher.start().wait()
            fetcher.stop()
            for (tenant, succeeded) in zip(fetcher.tenants.sorted(), fetched) where !succeeded {
                FileHandle.standardError.write(Data("warning: the keys of tenant \(tenant) could not be fetched\n".utf8))
            }
            ring = fetcher.ring
        }
        let authenticator = try file.identity.makeAuthenticator(remoteKeys: ring)
        var text = token
        if text == "-" { text = readLine(strippingNewline: true) ?? "" }
        do {
            let principal = try authenticator.authenticate(certificate: nil, bearerToken: text, now: Date())
            print(
                JSONValue.object(
                    JSONObject([
                        .init(key: "accepted", value: .bool(true)),
                        .init(key: "tenant", value: .string(principal.tenant)),
                        .init(key: "agent", value: .string(principal.agent)),
                        .init(key: "scopes", value: .array(principal.scopes.sorted().map(JSONValue.string))),
                        .init(key: "kid", value: principal.token?.keyID.map(JSONValue.string) ?? .null),
                        .init(key: "alg", value: .string(principal.token?.algorithm.rawValue ?? "")),
                    ])
                ).serialized)
        } catch {
            print(
                JSONValue.object(
                    JSONObject([
                        .init(key: "accepted", value: .bool(false)),
                        .init(key: "code", value: .string(error.code)),
                        .init(key: "reason", value: .string(error.description)),
                    ])
                ).serialized)
            throw ExitCode.failure
        }
    }
}

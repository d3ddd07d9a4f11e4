import ArgumentParser
import Foundation
import Gateway
import Identity
import Logging
import Policy
import TLS

/// `mcpgw config check FILE`: everything `serve` would load, checked without serving.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Work with gateway configuration files.",
        subcommands: [Check.self]
    )

    /// Validates a configuration file and everything it refers to; prints every problem found.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a configuration file: its fields, TLS files, CAs and CRLs, policies, upstreams and admin listener.",
            discussion: """
                Prints one line per problem, naming the file and the field, and exits 1 when there is any; `serve` \
                refuses to start with the same messages. The checks run part by part, so that one broken part does \
                not hide problems in the others.
                """
        )

        @Argument(help: "The configuration file.")
        var file: String

        func run() throws {
            let problems = Self.problems(in: file)
            if problems.isEmpty {
                let loaded = try ConfigurationFile.load(file)
                print(
                    "ok: \(file): \(loaded.identity.tenants.count) tenants, policies \(loaded.policies ?? "(none)"), TLS \(loaded.gateway.tls == nil ? "off" : "on")"
                )
                return
            }
            for problem in problems { print("error: \(problem)") }
            throw ExitCode.failure
        }

        /// Every problem found in the file and what it refers to, each naming the file and the field. `policies`
        /// and `upstreamOverridden` stand for command-line flags of `serve` that replace parts of the file.
        static func problems(
            in path: String, policies override: String? = nil, upstreamOverridden: Bool = false, tlsOverridden: Bool = false
        ) -> [String] {
            let loaded: ConfigurationFile
            do {
                loaded = try ConfigurationFile.load(path)
            } catch {
                // The document itself cannot be read as a configuration: nothing further can be checked.
                return ["\(error)"]
            }
            var problems: [String] = []
            if tlsOverridden {
                // `serve`'s TLS flags replace the file's settings; they are checked when the listener starts.
            } else if let tls = loaded.gateway.tls {
                do {
                    _ = try TLSContext(role: .server, configuration: tls)
                } catch {
                    problems.append("\(path): tls (certificate_chain, private_key, tenants' client_ca and crl): \(error)")
                }
            } else if !loaded.gateway.allowInsecurePlainHTTP {
                problems.append("\(path): tls: required")
            }
            if let admin = loaded.admin?.tls {
                do {
                    _ = try TLSContext(role: .server, configuration: admin)
                } catch {
                    problems.append("\(path): admin.tls: \(error)")
                }
            }
            if let policies = override ?? loaded.policies {
                do {
                    let snapshot = try GatewayAssembly.policySnapshot(policies, tenants: Array(loaded.identity.tenants.keys))
                    for tenant in loaded.identity.tenants.keys.sorted() where snapshot.tenants[tenant] == nil {
                        problems.append(
                            "\(path): tenants.\(tenant): no policies for this tenant in \(policies) (every call would be denied)")
                    }
                } catch {
                    problems.append("\(path): policies: \(error)")
                }
            } else {
                problems.append("\(path): policies: not set (serve needs --policies or \"policies\")")
            }
            for (tenant, upstream) in loaded.upstreams.sorted(by: { $0.key < $1.key }) where !upstreamOverridden {
                do {
                    _ = try UpstreamClient(upstreams: [tenant: upstream], limits: loaded.limits, logger: Logger(label: "config-check"))
                } catch {
                    problems.append("\(path): tenants.\(tenant).upstream: \(error)")
                }
            }
            do {
                _ = try loaded.identity.makeAuthenticator()
            } catch {
                problems.append("\(path): tenants (jwt): \(error)")
            }
            return problems
        }
    }
}

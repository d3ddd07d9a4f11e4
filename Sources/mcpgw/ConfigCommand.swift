import ArgumentParser
import Foundation
import Gateway
import Identity
import Logging
import NIOPosix
import Policy
import StrictJSON
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
            if let loaded = try? ConfigurationFile.load(file) {
                for warning in Self.warnings(loaded, file) { print("warning: \(warning)") }
            }
            if problems.isEmpty {
                let loaded = try ConfigurationFile.load(file)
                print(
                    "ok: \(file): \(loaded.identity.tenants.count) tenants, policies \(loaded.policies ?? "(none)"), TLS \(loaded.gateway.tls == nil ? "off" : "on")\(loaded.sharedLimits.map { ", rate limits shared through Redis at \($0.redis.address)" } ?? "")"
                )
                return
            }
            for problem in problems { print("error: \(problem)") }
            throw ExitCode.failure
        }

        /// Every problem found in the file and what it refers to, each naming the file and the field. `policies`,
        /// `upstreamOverridden`, `tlsOverridden`, `redisURL`, `auditLogOverridden` and `listenOverridden` stand for
        /// command-line flags of `serve` that replace parts of the file.
        static func problems(
            in path: String, policies override: String? = nil, upstreamOverridden: Bool = false, tlsOverridden: Bool = false,
            redisURL: String? = nil, auditLogOverridden: Bool = false, listenOverridden: Bool = false
        ) -> [String] {
            var (loaded, problems) = documentProblems(path, redisURL: redisURL)
            guard let loaded else { return problems }
            if tlsOverridden {
                // `serve`'s TLS flags replace the file's settings; they are checked when the listener starts.
            } else if let tls = loaded.gateway.tls {
                problems += tlsProblems(tls, loaded.identity, path)
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
            if !auditLogOverridden, let problem = auditLogProblem(loaded.auditLog) { problems.append("\(path): audit_log: \(problem)") }
            // What the gateway fetches over HTTPS (keys, introspection) must be set up to succeed: the URL and its CA
            // bundle (found by review: a missing `ca_file` passed this check; `serve` then died, or failed every fetch).
            for (tenant, identity) in loaded.identity.tenants.sorted(by: { $0.key < $1.key }) {
                if let remote = identity.jwt?.remoteKeys, let problem = RemoteKeyFetcher.problem(with: remote) {
                    problems.append("\(path): tenants.\(tenant).jwt (keys fetched over HTTPS): \(problem)")
                }
                if let introspection = identity.introspection {
                    do {
                        _ = try TokenIntrospector(
                            settings: [tenant: introspection], audiences: [:], eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
                            logger: Logger(label: "config-check"))
                    } catch {
                        problems.append("\(path): tenants.\(tenant).oauth.introspection: \(error)")
                    }
                }
            }
            if !listenOverridden, let admin = loaded.admin, let problem = Self.sharedPortProblem(admin.listen, loaded.gateway.listen) {
                problems.append("\(path): admin.listen: \(problem)")
            }
            do {
                _ = try loaded.identity.makeAuthenticator()
            } catch {
                problems.append("\(path): tenants (jwt): \(error)")
            }
            return problems
        }

        /// Why the admin listener cannot listen at `admin` beside the MCP listener at `listen`
        /// (`ListenAddress.collides`), or nil. Found by review: `serve` then died with "Address already in use".
        static func sharedPortProblem(_ admin: ListenAddress, _ listen: ListenAddress) -> String? {
            guard admin.collides(with: listen) else { return nil }
            return "\(admin) is the MCP listener's port too (listen \(listen)): give the admin listener a port of its own"
        }

        /// Settings that load and work but are likely not what a production gateway wants, each naming the file and
        /// the field: an admin listener reachable off the machine without TLS, a tenant without an upstream, a
        /// `client_auth` that shuts out a tenant's callers or ignores its CA, or shared limits that fall back to whole
        /// local limits on every replica during a Redis outage, a tenant without a CRL next to one with, or a wide range
        /// trusted to write PROXY protocol headers, or plain `redis://` off this machine.
        /// `config check` prints them and still succeeds.
        static func warnings(_ loaded: ConfigurationFile, _ path: String) -> [String] {
            var warnings: [String] = []
            if let admin = loaded.admin, admin.tls == nil, !admin.listen.isLoopback {
                warnings.append(
                    "\(path): admin.listen: \(admin.listen) is not on loopback and has no TLS: anyone who reaches it can read metrics and reload"
                )
            }
            // Found by review: each of these made a whole tenant's callers fail, and `config check` said ok.
            for tenant in loaded.identity.tenants.keys.sorted() where loaded.upstreams[tenant] == nil {
                warnings.append(
                    "\(path): tenants.\(tenant): no upstream: its MCP requests will get 502 (set tenants.\(tenant).upstream, or serve --upstream URL)"
                )
            }
            if let tls = loaded.gateway.tls {
                let tenants = loaded.identity.tenants.sorted(by: { $0.key < $1.key })
                switch tls.clientAuthentication {
                case .required:
                    for (tenant, identity) in tenants where identity.clientCABundles.isEmpty {
                        warnings.append(
                            "\(path): tls.client_auth: required, and tenant \(tenant) has no client_ca: every handshake needs a certificate and this tenant has no CA to verify one, so its callers never get as far as presenting a token"
                        )
                    }
                case .none:
                    for (tenant, identity) in tenants where !identity.clientCABundles.isEmpty {
                        warnings.append(
                            "\(path): tls.client_auth: none, so tenant \(tenant)'s client_ca is never used: no client certificate is asked for, and its agents can only present tokens"
                        )
                    }
                case .optional:
                    break
                }
            }
            // Found by review: CRL checking is switched on for every chain once any tenant has a CRL (OpenSSL's store
            // flags are the listener's), and a chain whose CA has no CRL then fails its handshake.
            let tenantsWithCRLs = loaded.identity.tenants.filter { !$0.value.crlFiles.isEmpty }.keys.sorted()
            if let example = tenantsWithCRLs.first {
                for (tenant, identity) in loaded.identity.tenants.sorted(by: { $0.key < $1.key })
                where identity.crlFiles.isEmpty && !identity.clientCABundles.isEmpty {
                    warnings.append(
                        "\(path): tenants.\(tenant): no crl, while tenant \(example) has one: every client chain is then checked against CRLs, and \(tenant)'s agents fail the TLS handshake (give its CA a CRL, even an empty one)"
                    )
                }
            }
            // A trusted proxy's header decides whom every record and per-source share names: a range that takes in
            // more than the load balancers lets anyone there name any address.
            for range in loaded.gateway.proxyProtocol?.trustedProxies ?? [] where range.isWide {
                warnings.append(
                    "\(path): proxy_protocol.trusted_proxies: \(range) is a wide range: any host in it can name any client address (list the load balancers' own addresses)"
                )
            }
            if let risk = loaded.sharedLimits?.redis.plaintextRisk { warnings.append("\(path): redis.url: \(risk)") }
            if let shared = loaded.sharedLimits, shared.replicas == 1 {
                let falling = loaded.identity.tenants.keys.sorted().filter { shared.failureMode(of: $0) == .localFallback }
                if !falling.isEmpty {
                    warnings.append(
                        "\(path): redis.replicas: 1, and tenants \(falling.joined(separator: ", ")) fall back to local limits: during a Redis outage each replica admits the whole limit (set replicas to the number of gateway replicas)"
                    )
                }
            }
            return warnings
        }

        /// Why the audit log could not be opened for appending (its directory missing or not writable, the file not
        /// writable), or nil; checked without creating anything.
        static func auditLogProblem(_ path: String) -> String? {
            guard path != "-" else { return nil }
            let directory = (path as NSString).deletingLastPathComponent
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory.isEmpty ? "." : directory, isDirectory: &isDirectory),
                isDirectory.boolValue
            else { return "\(path): the directory \(directory) does not exist" }
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                if isDirectory.boolValue { return "\(path) is a directory, not a file" }
                return access(path, W_OK) == 0 ? nil : "\(path) is not writable by this user"
            }
            return access(directory.isEmpty ? "." : directory, W_OK | X_OK) == 0
                ? nil : "\(path) cannot be created: \(directory) is not writable by this user"
        }

        /// The configuration as far as it can be read, and the problems of its document: after each problem, the
        /// part it is in (a tenant's `jwt`, `upstream`, … or a top-level section) is set aside and the rest read
        /// again, so that one broken part does not hide the others. Nil when a part the rest depends on is broken.
        static func documentProblems(_ path: String, redisURL: String? = nil) -> (ConfigurationFile?, [String]) {
            guard let data = FileManager.default.contents(atPath: path),
                var document = try? JSONParser.parse(Array(data), limits: JSONLimits(maximumDepth: 32))
            else {
                do {
                    return (try ConfigurationFile.load(path, redisURL: redisURL), [])
                } catch {
                    return (nil, ["\(error)"])
                }
            }
            let base = (path as NSString).deletingLastPathComponent
            var problems: [String] = []
            var setAside: [[String]] = []
            for _ in 0..<64 {
                do {
                    let file = try ConfigurationFile.parse(
                        document.serializedBytes, baseDirectory: base.isEmpty ? "." : base, redisURL: redisURL)
                    return (file, problems)
                } catch let error as JSONFieldError {
                    let part = Self.part(of: error.path)
                    // A problem caused by setting a part aside (a required section now missing) is not reported.
                    if setAside.contains(part) { return (nil, problems) }
                    problems.append("\(path): \(error)")
                    guard let pruned = Self.removing(part, from: document) else { return (nil, problems) }
                    setAside.append(part)
                    document = pruned
                } catch {
                    problems.append("\(path): \(error)")
                    return (nil, problems)
                }
            }
            return (nil, problems)
        }

        /// The part of the document a field belongs to: `tenants.<t>.<section>` for a tenant's settings, the
        /// top-level key otherwise.
        static func part(of fieldPath: String) -> [String] {
            let components = fieldPath.split(separator: ".").map { String($0.prefix { $0 != "[" }) }
            return components.first == "tenants" ? Array(components.prefix(3)) : Array(components.prefix(1))
        }

        /// `document` without the member at `keyPath`; nil when there is none to remove.
        static func removing(_ keyPath: [String], from document: JSONValue) -> JSONValue? {
            guard let first = keyPath.first, let object = document.objectValue, object[first] != nil else { return nil }
            if keyPath.count == 1 { return .object(JSONObject(object.members.filter { $0.key != first })) }
            guard let inner = removing(Array(keyPath.dropFirst()), from: object[first]!) else { return nil }
            return .object(JSONObject(object.members.map { $0.key == first ? .init(key: first, value: inner) : $0 }))
        }

        /// Problems of the listener's TLS settings, each under the field that causes it: the certificate and key
        /// first (nothing else can be checked without them), then each tenant's client CA bundles and CRLs.
        static func tlsProblems(_ tls: TLSConfiguration, _ identity: IdentityConfiguration, _ path: String) -> [String] {
            var own = tls
            own.trustedCABundles = []
            own.crlFiles = []
            own.clientAuthentication = .none
            do {
                _ = try TLSContext(role: .server, configuration: own)
            } catch {
                let field = "\(error)".contains("private key") ? "tls.private_key" : "tls.certificate_chain"
                return ["\(path): \(field): \(error)"]
            }
            var problems: [String] = []
            for (tenant, settings) in identity.tenants.sorted(by: { $0.key < $1.key }) {
                var goodBundles: [TLSConfiguration.TrustedCABundle] = []
                for bundle in settings.clientCABundles {
                    var single = own
                    single.trustedCABundles = [.init(label: tenant, path: bundle)]
                    single.clientAuthentication = .optional
                    do {
                        _ = try TLSContext(role: .server, configuration: single)
                        goodBundles.append(.init(label: tenant, path: bundle))
                    } catch {
                        problems.append("\(path): tenants.\(tenant).client_ca: \(error)")
                    }
                }
                for crl in settings.crlFiles where !goodBundles.isEmpty {
                    var single = own
                    single.trustedCABundles = goodBundles
                    single.crlFiles = [crl]
                    single.clientAuthentication = .optional
                    do {
                        _ = try TLSContext(role: .server, configuration: single)
                    } catch {
                        problems.append("\(path): tenants.\(tenant).crl: \(error)")
                    }
                }
            }
            if problems.isEmpty {
                do {
                    _ = try TLSContext(role: .server, configuration: tls)
                } catch {
                    problems.append("\(path): tls: \(error)")
                }
            }
            return problems
        }
    }
}

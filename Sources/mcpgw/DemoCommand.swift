import ArgumentParser
import Foundation
import Gateway
import Logging
import MCPDemoServer
import ServiceLifecycle

/// `mcpgw demo`: the gateway on the development configuration, in front of a built-in demo MCP server.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the gateway (mcpgw.dev.json, policies/, certs-dev/) in front of a built-in demo MCP server.",
        discussion: "Run from the repository root. Audit records are printed as JSON lines; Ctrl-C stops."
    )

    @Option(help: "Address the gateway listens on.")
    var listen: String = "127.0.0.1:8443"

    @Option(help: "Development configuration file.")
    var config: String = "mcpgw.dev.json"

    @Option(help: "Audit log: a file path, or - for standard output.")
    var auditLog: String = "-"

    @Option(help: "Policies directory (default: the configuration's, policies/).")
    var policies: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "mcpgw")
        guard FileManager.default.fileExists(atPath: config) else {
            throw ValidationError("\(config) not found: run mcpgw demo from the repository root")
        }
        var file = try ConfigurationFile.load(config)
        guard let address = ListenAddress(parsing: listen) else { throw ValidationError("--listen '\(listen)' is not HOST:PORT") }
        file.gateway.listen = address
        let upstream = try await DemoMCPServer.start()
        let services = try GatewayAssembly.services(
            file, .init(upstream: upstream.url, policies: policies, auditLog: auditLog), logger: logger)
        let gateway = GatewayService(configuration: file.gateway, services: services, logger: logger)
        FileHandle.standardError.write(Data(Self.instructions(listen: address, upstream: upstream.url).utf8))
        let group = ServiceGroup(
            services: [gateway, ReloadService(engine: services.policy, audit: services.audit, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
        await upstream.stop()
    }

    static func instructions(listen: ListenAddress, upstream: String) -> String {
        let url = "https://localhost:\(listen.port)/mcp"
        let curl =
            "curl -sS --cacert certs-dev/gateway-ca.pem -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'"
        return """

            mcpgw demo — gateway https://\(listen) → demo MCP server \(upstream)
            Tenants acme and globex (policies/), development certificates (certs-dev/). Audit records follow on stdout.

            As acme/bot1 with its client certificate:
              \(curl) \\
                --cert certs-dev/acme/agents/bot1.pem --key certs-dev/acme/agents/bot1.key \(url) \\
                -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"readme.txt"}}}'
            Denied by rule A1 (path traversal, argument path):
              ... -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"../../etc/passwd"}}}'
            Denied by rule R3:
              ... -d '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"readme.txt"}}}'

            With a bearer token instead of a certificate:
              TOKEN=$(mcpgw issue-token --tenant acme --agent bot1 --scope tools:read)
              \(curl) -H "Authorization: Bearer $TOKEN" \(url) \\
                -d '{"jsonrpc":"2.0","id":4,"method":"tools/list"}'

            Explain a decision without sending anything:
              mcpgw policy explain --tenant acme --agent bot1 --tool read_file --args '{"path":"../x"}'


            """
    }
}

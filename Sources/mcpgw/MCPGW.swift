import ArgumentParser

/// The `mcpgw` command: a policy gateway for Model Context Protocol servers.
@main
struct MCPGW: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcpgw",
        abstract: "A policy gateway (reverse proxy) for Model Context Protocol servers.",
        subcommands: [
            DemoCommand.self, ServeCommand.self, IssueTokenCommand.self, VerifyTokenCommand.self, PolicyCommand.self, ConfigCommand.self,
        ]
    )
}

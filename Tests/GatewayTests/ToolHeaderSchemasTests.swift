import StrictJSON
import Testing

@testable import Gateway

/// What the gateway learns of tools' `Mcp-Param-*` mirrors, and how it checks a call against them.
@Suite("Tool header schemas")
struct ToolHeaderSchemasTests {
    /// An input schema whose `count` properties each mirror into a header `P<i>`; `token` overrides the first token.
    static func schema(mirrors count: Int, token: String? = nil) throws -> JSONValue {
        let properties = (0..<count).map { #""a\#($0)": {"type": "string", "x-mcp-header": "\#($0 == 0 ? token ?? "P0" : "P\($0)")"}"# }
        return try JSONParser.parse(#"{"type": "object", "properties": {\#(properties.joined(separator: ","))}}"#)
    }

    @Test("a tool with more mirrors than the bound, or a name longer than it, is not remembered (its calls are not checked)")
    func bounds() throws {
        let schemas = ToolHeaderSchemas()
        let limit = ToolHeaderSchemas.maximumMirrorsPerTool
        schemas.learn(tenant: "acme", tool: "within", inputSchema: try Self.schema(mirrors: limit))
        schemas.learn(tenant: "acme", tool: "beyond", inputSchema: try Self.schema(mirrors: limit + 1))
        let long = String(repeating: "x", count: ToolHeaderSchemas.maximumNameBytes + 1)
        schemas.learn(tenant: "acme", tool: "long", inputSchema: try Self.schema(mirrors: 1, token: long))
        let arguments = try JSONParser.parse(#"{"a0": "v"}"#)
        // A call without the header its argument mirrors: refused for the tool remembered, unchecked for the others.
        #expect(schemas.mismatch(tenant: "acme", tool: "within", arguments: arguments, headers: []) != nil)
        #expect(schemas.mismatch(tenant: "acme", tool: "beyond", arguments: arguments, headers: []) == nil)
        #expect(schemas.mismatch(tenant: "acme", tool: "long", arguments: arguments, headers: []) == nil)
        #expect(ToolHeaderSchemas.mirrors(in: try Self.schema(mirrors: limit + 1)).isEmpty)
    }

    @Test("what a tenant's tools mirror is bounded in bytes: older tools are forgotten to make room, other tenants keep theirs")
    func byteBound() throws {
        let schemas = ToolHeaderSchemas()
        let schema = try Self.schema(mirrors: ToolHeaderSchemas.maximumMirrorsPerTool)
        schemas.learn(tenant: "globex", tool: "kept", inputSchema: schema)
        // Each tool costs about 4.5 KB here: 2,000 of them are over twice the bound, and under the bound in tools.
        for index in 0..<2_000 { schemas.learn(tenant: "acme", tool: "tool-\(index)", inputSchema: schema) }
        let bytes = schemas.rememberedBytes(tenant: "acme")
        #expect(bytes <= ToolHeaderSchemas.maximumBytesPerTenant && bytes > ToolHeaderSchemas.maximumBytesPerTenant / 2)
        let arguments = try JSONParser.parse(#"{"a0": "v"}"#)
        #expect(schemas.mismatch(tenant: "acme", tool: "tool-1999", arguments: arguments, headers: []) != nil, "the latest is remembered")
        #expect(schemas.mismatch(tenant: "globex", tool: "kept", arguments: arguments, headers: []) != nil)
        // Learned again, and forgotten: the count follows.
        schemas.learn(tenant: "acme", tool: "tool-1999", inputSchema: schema)
        #expect(schemas.rememberedBytes(tenant: "acme") == bytes)
        schemas.learn(tenant: "acme", tool: "tool-1999", inputSchema: nil)
        #expect(
            schemas.rememberedBytes(tenant: "acme") == bytes
                - ToolHeaderSchemas.cost(of: "tool-1999", ToolHeaderSchemas.mirrors(in: schema)))
    }

    @Test("headers are matched by token case-insensitively, once each, whatever else the request carries")
    func matching() throws {
        let schemas = ToolHeaderSchemas()
        schemas.learn(tenant: "acme", tool: "t", inputSchema: try Self.schema(mirrors: 2))
        let arguments = try JSONParser.parse(#"{"a0": "v0", "a1": "v1"}"#)
        let padding = (0..<500).map { (name: "X-Pad-\($0)", value: "p") }
        let agreeing = padding + [(name: "mcp-param-p0", value: "v0"), (name: "MCP-PARAM-P1", value: "v1")]
        #expect(schemas.mismatch(tenant: "acme", tool: "t", arguments: arguments, headers: agreeing) == nil)
        let disagreeing = padding + [(name: "Mcp-Param-P0", value: "v0"), (name: "Mcp-Param-P1", value: "other")]
        #expect(schemas.mismatch(tenant: "acme", tool: "t", arguments: arguments, headers: disagreeing)?.contains("does not match") == true)
    }
}

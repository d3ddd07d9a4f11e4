import StrictJSON
import Synchronization

/// What each tenant's tools mirror into `Mcp-Param-*` headers, learned from their `inputSchema` as `tools/list`
/// results pass through (an `x-mcp-header` annotation on a property, reached through `properties` only), so that a
/// `tools/call` whose header disagrees with its arguments is refused like an `Mcp-Name` that disagrees with the body.
/// Bounded: at most `maximumTools` tools and `maximumBytesPerTenant` bytes of names per tenant are remembered (others
/// are forgotten to make room), each tool with at most `maximumMirrorsPerTool` mirrors whose names and paths are short
/// (`maximumNameBytes`); a tool whose schema goes beyond that (which no real tool does: they mirror a few arguments)
/// is not remembered, like a tool not yet seen, so an upstream cannot make the gateway keep unbounded memory or make
/// each call's check costly.
public final class ToolHeaderSchemas: Sendable {
    /// One mirrored argument: its path of property names, and the header name's suffix.
    struct Mirror: Sendable, Equatable {
        let path: [String]
        let token: String
    }

    /// Tools remembered per tenant.
    static let maximumTools = 10_000
    /// Mirrored arguments remembered per tool.
    static let maximumMirrorsPerTool = 64
    /// Longest header token and property name (bytes) of a mirror, and deepest path.
    static let maximumNameBytes = 128

    /// Bytes of tool names, mirror tokens and property paths remembered per tenant (with a per-entry overhead).
    static let maximumBytesPerTenant = 4 << 20

    /// One tenant's tools and what they take.
    private struct Table {
        var tools: [String: [Mirror]] = [:]
        var bytes = 0
    }

    private let tenants = Mutex<[String: Table]>([:])

    /// What remembering `mirrors` of `tool` takes: its name, each token and path name, and a fixed overhead per entry
    /// (the collections and strings themselves).
    static func cost(of tool: String, _ mirrors: [Mirror]) -> Int {
        mirrors.reduce(64 + tool.utf8.count) { total, mirror in
            total + 48 + mirror.token.utf8.count + mirror.path.reduce(0) { $0 + 16 + $1.utf8.count }
        }
    }

    /// A store that knows no tool yet.
    public init() {}

    /// Remembers what `tool` of `tenant` mirrors (forgets it when it mirrors nothing).
    func learn(tenant: String, tool: String, inputSchema: JSONValue?) {
        let mirrors = Self.mirrors(in: inputSchema)
        let cost = mirrors.isEmpty ? 0 : Self.cost(of: tool, mirrors)
        // Changed in place: copying a tenant's table of up to 10,000 tools for every tool learned made a list's learning
        // cost tools × tools.
        tenants.withLock { tenants in
            if let known = tenants[tenant]?.tools[tool] {
                tenants[tenant]!.tools[tool] = nil
                tenants[tenant]!.bytes -= Self.cost(of: tool, known)
            }
            guard !mirrors.isEmpty, cost <= Self.maximumBytesPerTenant else {
                if tenants[tenant]?.tools.isEmpty == true { tenants[tenant] = nil }
                return
            }
            var table = tenants.removeValue(forKey: tenant) ?? Table()
            // Room made by forgetting other tools (an arbitrary one at a time), as for a tool not seen yet.
            while table.tools.count >= Self.maximumTools || table.bytes + cost > Self.maximumBytesPerTenant,
                let other = table.tools.first
            {
                table.tools[other.key] = nil
                table.bytes -= Self.cost(of: other.key, other.value)
            }
            table.tools[tool] = mirrors
            table.bytes += cost
            tenants[tenant] = table
        }
    }

    /// The bytes remembered for `tenant` (`cost(of:_:)` summed).
    func rememberedBytes(tenant: String) -> Int { tenants.withLock { $0[tenant]?.bytes ?? 0 } }

    /// Why the `Mcp-Param-*` headers of a call of `tool` disagree with its `arguments`, or nil when they agree (or the
    /// tool's schema is not known). `headers` are the request's (each `Mcp-Param-*` appears at most once: checked
    /// before); they are read once, so the check is linear in the headers and the mirrors.
    func mismatch(
        tenant: String, tool: String, arguments: JSONValue?, headers: some Sequence<(name: String, value: String)>
    )
        -> String?
    {
        guard let mirrors = tenants.withLock({ $0[tenant]?.tools[tool] }) else { return nil }
        var sentByToken: [String: String] = [:]
        for (name, value) in headers where MCPHeaderValue.isParamHeader(name) {
            sentByToken[String(name.dropFirst("mcp-param-".count)).lowercased()] = value
        }
        for mirror in mirrors {
            let name = "Mcp-Param-\(mirror.token)"
            let expected = Self.rendered(Self.value(at: mirror.path, in: arguments))
            let sent = sentByToken[mirror.token.lowercased()].map { MCPHeaderValue.decode($0) }
            switch (expected, sent) {
            case (nil, nil): continue
            // Compared as bytes: Swift `==` is canonical equivalence (the Kelvin sign would equal a K).
            case (let value?, let header??) where value.utf8.elementsEqual(header.utf8): continue
            case (_?, nil): return "\(name) header is missing for argument \(mirror.path.joined(separator: "."))"
            case (nil, _?): return "\(name) header is sent without its argument \(mirror.path.joined(separator: "."))"
            default: return "\(name) header does not match argument \(mirror.path.joined(separator: "."))"
            }
        }
        return nil
    }

    /// Properties annotated with `x-mcp-header`, reached from the schema's root through `properties` only; empty when
    /// there are none or more than the bounds allow (then the tool is not remembered).
    static func mirrors(in schema: JSONValue?) -> [Mirror] {
        var found: [Mirror] = []
        var withinBounds = true
        func walk(_ node: JSONValue?, path: [String], depth: Int) {
            guard withinBounds, depth < 16, let properties = node?.objectValue?["properties"]?.objectValue else { return }
            for member in properties.members where withinBounds {
                let here = path + [member.key]
                if let token = member.value.objectValue?["x-mcp-header"]?.stringValue, !token.isEmpty {
                    guard found.count < maximumMirrorsPerTool, token.utf8.count <= maximumNameBytes,
                        here.allSatisfy({ $0.utf8.count <= maximumNameBytes })
                    else {
                        withinBounds = false
                        return
                    }
                    found.append(Mirror(path: here, token: token))
                }
                walk(member.value, path: here, depth: depth + 1)
            }
        }
        walk(schema, path: [], depth: 0)
        return withinBounds ? found : []
    }

    private static func value(at path: [String], in arguments: JSONValue?) -> JSONValue? {
        var node = arguments
        for key in path { node = node?.objectValue?[key] }
        return node
    }

    /// How a client mirrors a value into a header: strings as they are, booleans as `true`/`false`, numbers as their
    /// literal; nothing for null, objects and arrays.
    private static func rendered(_ value: JSONValue?) -> String? {
        switch value {
        case .string(let text)?: text
        case .bool(let flag)?: flag ? "true" : "false"
        case .number(let number)?: number.literal
        default: nil
        }
    }
}
